/*
 * export.h - which symbols the libraries show. Both libraries are compiled with
 * hidden visibility; a public header wraps its declarations in DSC_API_BEGIN /
 * DSC_API_END, so exactly what the headers declare is exported and internals
 * (dsc__*, file-shared helpers, the bundled scanner) stay inside.
 *
 *   #include "discern/export.h"
 *   DSC_API_BEGIN
 *   ... public declarations ...
 *   DSC_API_END
 */
#ifndef DISCERN_EXPORT_H
#define DISCERN_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define DSC_API_BEGIN _Pragma("GCC visibility push(default)")
#define DSC_API_END _Pragma("GCC visibility pop")
#else
#define DSC_API_BEGIN
#define DSC_API_END
#endif

#endif
