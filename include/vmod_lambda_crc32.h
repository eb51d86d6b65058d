/*
 * CRC-32 (ISO-HDLC, the polynomial of zlib, binascii.crc32 and the AWS event stream framing) with
 * PCLMULQDQ folding where the CPU has it, a table otherwise. The same values as zlib's crc32():
 * crc = lambda_crc32(crc, p, n) continues a running CRC (start with 0).
 */
#ifndef VMOD_LAMBDA_CRC32_H
#define VMOD_LAMBDA_CRC32_H

#include <stddef.h>
#include <stdint.h>

uint32_t lambda_crc32(uint32_t crc, const unsigned char *p, size_t n);
uint32_t lambda_crc32_table(uint32_t crc, const unsigned char *p, size_t n);
int lambda_crc32_folds(void);

#endif
