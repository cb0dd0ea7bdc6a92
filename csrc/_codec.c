/* _codec.c: binding for request decoding and response encoding (the JSON
 * and tensor codecs of the serving path). */
#include "_binding.h"

PyMethodDef mls_codec_methods[] = {
    {NULL, NULL, 0, NULL},
};
