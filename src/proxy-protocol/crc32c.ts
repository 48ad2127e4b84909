/** CRC32C (Castagnoli), table-driven, reflected polynomial 0x82F63B78: the PP2_TYPE_CRC32C checksum. */

const CRC32C_TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** Feeds bytes into a running (pre-inverted) CRC32C register. */
function crc32cUpdate(crc: number, data: Uint8Array, start: number, end: number): number {
  for (let i = start; i < end; i++) {
    crc = CRC32C_TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  }
  return crc;
}

/**
 * CRC32C (RFC 4960 appendix B, as the PROXY protocol requires) of `data`.
 * `crc32c(Buffer.from('123456789'))` is `0xe3069283`.
 */
export function crc32c(data: Uint8Array): number {
  return (crc32cUpdate(0xffffffff, data, 0, data.length) ^ 0xffffffff) >>> 0;
}

/**
 * CRC32C of `header` with the 4 bytes at `zeroAt` read as zeros (no copy):
 * the spec sums a header with its own CRC32C value zeroed.
 */
export function crc32cWithHole(header: Uint8Array, zeroAt: number): number {
  let crc = crc32cUpdate(0xffffffff, header, 0, zeroAt);
  for (let i = 0; i < 4; i++) crc = CRC32C_TABLE[crc & 0xff]! ^ (crc >>> 8);
  crc = crc32cUpdate(crc, header, zeroAt + 4, header.length);
  return (crc ^ 0xffffffff) >>> 0;
}
