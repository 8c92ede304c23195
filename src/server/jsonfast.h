/*
 * jsonfast.h -- a quick JSON check without allocation, for the content type of every
 * event the server reads out and the client appends: parsing each event's data with
 * jansson cost more than the rest of a read. It says yes only for a plain subset of JSON
 * that jansson surely accepts too (ASCII strings with simple escapes, numbers of up to 15
 * digits without exponent, depth up to 32); anything else is for jansson to decide.
 * A leaf: it includes nothing of the server's, so src/remote compiles it as well.
 */
#ifndef ANNAL_JSONFAST_H
#define ANNAL_JSONFAST_H

#include <stddef.h>

/* 1: data is JSON (in the plain subset); -1: not sure, ask a full parser. */
int jsonfast_plain(const void *data, size_t len);

#endif
