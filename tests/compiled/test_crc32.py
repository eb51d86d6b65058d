"""vmod_lambda._crc32 (include/vmod_lambda_crc32.c), the CRC-32 of the event stream decoder, gives
binascii.crc32's values: at every length from 0 to 1100 bytes and every alignment, running CRCs
continued over pieces, large buffers (the folding and its tail), any bytes-like object; and the
event stream decoder uses it."""

import random
from binascii import crc32 as zlib_crc32

import pytest

from vmod_lambda import _crc32, eventstream

DATA = random.Random(32).randbytes(3 << 20)


def test_every_length_and_alignment_gives_zlibs_value():
    for n in range(0, 1100):
        for off in (0, 1, 7, 15, 16):
            piece = DATA[off:off + n]
            assert _crc32.crc32(piece) == zlib_crc32(piece), (n, off)
            assert _crc32.crc32_table(piece) == zlib_crc32(piece), (n, off)


@pytest.mark.parametrize("size", [64, 65, 79, 80, 127, 128, 4096, 65536 + 37, 1 << 20,
                                  (3 << 20) - 5])
def test_large_buffers_and_running_crcs(size):
    data = DATA[:size]
    assert _crc32.crc32(data) == zlib_crc32(data)
    for start in (0, 0xFFFFFFFF, 0x12345678):
        assert _crc32.crc32(data, start) == zlib_crc32(data, start)
    cut = size // 3
    assert _crc32.crc32(data[cut:], _crc32.crc32(data[:cut])) == zlib_crc32(data)


def test_any_bytes_like_object_and_bad_input():
    ba = bytearray(DATA[:5000])
    assert _crc32.crc32(ba) == _crc32.crc32(memoryview(ba)[0:5000]) == zlib_crc32(ba)
    assert _crc32.crc32(memoryview(DATA)[3:70003]) == zlib_crc32(DATA[3:70003])
    assert _crc32.crc32(b"") == 0
    with pytest.raises(TypeError):
        _crc32.crc32("text")
    with pytest.raises(BufferError):
        _crc32.crc32(memoryview(DATA)[::2])     # not contiguous


def test_the_flipped_bits_of_a_damaged_frame_are_seen():
    data = bytearray(DATA[:70000])
    good = _crc32.crc32(data)
    rng = random.Random(5)
    for _ in range(200):
        at = rng.randrange(len(data))
        bit = 1 << rng.randrange(8)
        data[at] ^= bit
        assert _crc32.crc32(data) == zlib_crc32(data) != good
        data[at] ^= bit


def test_the_event_stream_decoder_uses_it():
    assert eventstream.crc32 is _crc32.crc32
    print("PCLMULQDQ folding:", _crc32.folds())
