"""`smartmeter client consumer-key` against a real meter process with its H1 port on a
pseudo-terminal (`meter run --h1 pty`): after the command, what a consumer device reads from the
pty decrypts with the key the command was given (or printed), and its frame counter starts again
at 1 (a new key resets the sending counter, catalog §2.9).

The consumer's side is written here: the frames are joined with the project's M-Bus reader, then
general-glo-ciphering is taken apart by hand (DB, system title, length, security control 0x21 =
suite 1 encrypted only, invocation counter) and decrypted with `cryptography`'s AES-GCM (IV =
system title + counter, no tag on H1). Nothing of the command under test computes an expectation.
"""
from __future__ import annotations

import json
import os
import re
import select
import time

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from client_cli import as_client, ok, one_error_line, smartmeter
from meterproc import free_port, start_meter
from smartmeter.mbus.consumer_port import ConsumerApdu, ConsumerPushReader

PTY_LINE = re.compile(r"H1 consumer port: .* on (/dev/\S+)")
KEY = bytes.fromhex("8899AABBCCDDEEFF0011223344556677")
DATA_NOTIFICATION = 0x0F  # the xDLMS data-notification tag: what the plaintext begins with
# catalog §7, the default push list of a single-phase meter: clock attr 1 and 2, device ID 1, COSEM
# LDN, U L1, I L1, +P, -P, +A, -A, +R, -R
SINGLE_PHASE_ENTRIES = 12
ENCRYPTED_ONLY_SUITE_1 = 0x21  # security control: bit 5 encryption, suite 0 (AES-GCM-128)
HEX_KEY = re.compile(r"^consumer key: ([0-9A-F]{32})$", re.M)


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    process = start_meter(tmp_path_factory.mktemp("consumer-key") / "meter", "--h1", "pty", "--http-port", "0")
    yield process
    process.stop()


def pty_path(meter) -> str:
    for line in meter.output:
        match = PTY_LINE.search(line)
        if match:
            return match.group(1)
    raise AssertionError("the meter printed no H1 pty:\n" + "".join(meter.output))


def push_from_the_pty(meter) -> bytes:
    """Ask for a consumer push now and read it from the pty as a consumer device: the APDU."""
    fd = os.open(pty_path(meter), os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        ok(as_client(meter, "management", "push", "consumer"))
        reader = ConsumerPushReader()
        deadline = time.monotonic() + 60  # a push takes about 1.4 s at 2400 Bd; this only stops a hang
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                reader.feed(os.read(fd, 4096))
            apdus = [item.apdu for item in reader.take() if isinstance(item, ConsumerApdu)]
            if apdus:
                return apdus[0]
        raise AssertionError("no consumer push arrived on the pty")
    finally:
        os.close(fd)


def decrypt(apdu: bytes, key: bytes) -> tuple[int, bytes]:
    """general-glo-ciphering (DB, 08, system title, length, SC, IC, ciphertext) -> (IC, plaintext)."""
    assert apdu[0] == 0xDB and apdu[1] == 8
    title = apdu[2:10]
    if apdu[10] < 0x80:
        length, at = apdu[10], 11
    else:
        size = apdu[10] & 0x7F
        length, at = int.from_bytes(apdu[11:11 + size], "big"), 11 + size
    assert len(apdu) == at + length
    assert apdu[at] == ENCRYPTED_ONLY_SUITE_1
    counter = int.from_bytes(apdu[at + 1:at + 5], "big")
    ciphertext = apdu[at + 5:]
    # no tag on H1 (encryption only): the GCM keystream is all a consumer needs
    decryptor = Cipher(algorithms.AES(key), modes.GCM(title + counter.to_bytes(4, "big"))).decryptor()
    return counter, decryptor.update(ciphertext)


def is_the_push(plaintext: bytes) -> bool:
    """A data-notification: tag, long-invoke-id-and-priority (4), date-time as octet-string(12),
    then the body, a structure of the push list's entries. A wrong key gives noise here."""
    return (plaintext[0] == DATA_NOTIFICATION and plaintext[5] == 0x0C and plaintext[18] == 0x02
            and plaintext[19] == SINGLE_PHASE_ENTRIES)


def test_a_push_after_consumer_key_decrypts_with_that_key_from_counter_1(meter):
    out = ok(as_client(meter, "management", "consumer-key", "--key", KEY.hex()))
    assert "0-0:43.0.103.255" in out
    assert KEY.hex().upper() not in out.upper()  # the user gave it: not echoed
    apdu = push_from_the_pty(meter)
    counter, plaintext = decrypt(apdu, KEY)
    assert counter == 1
    assert is_the_push(plaintext)
    assert not is_the_push(decrypt(apdu, bytes(16))[1])  # the check tells a wrong key apart
    counter, plaintext = decrypt(push_from_the_pty(meter), KEY)
    assert counter == 2 and is_the_push(plaintext)


def test_without_key_a_random_key_is_printed_once_and_the_push_decrypts_with_it(meter):
    result = as_client(meter, "management", "consumer-key")
    out = ok(result)
    (printed,) = HEX_KEY.findall(out)
    key = bytes.fromhex(printed)
    assert key != KEY
    assert "not shown again" in result.stderr
    counter, plaintext = decrypt(push_from_the_pty(meter), key)
    assert counter == 1 and is_the_push(plaintext)
    second = HEX_KEY.findall(ok(as_client(meter, "management", "consumer-key")))
    assert second != [printed]  # a new one each time


def test_json_gives_the_generated_key(meter):
    answer = json.loads(ok(as_client(meter, "management", "--json", "consumer-key")))
    assert answer["security_setup"] == "0-0:43.0.103.255" and answer["generated"] is True
    counter, plaintext = decrypt(push_from_the_pty(meter), bytes.fromhex(answer["key"]))
    assert counter == 1 and is_the_push(plaintext)


def test_a_client_without_master_key_is_refused_in_one_line_and_the_key_stays(meter):
    ok(as_client(meter, "management", "consumer-key", "--key", KEY.hex()))
    line = one_error_line(as_client(meter, "data_readout", "consumer-key", "--key", bytes(range(16)).hex()))
    assert "master_key" in line, line
    counter, plaintext = decrypt(push_from_the_pty(meter), KEY)
    assert is_the_push(plaintext) and counter == 1


def test_the_meters_refusal_is_one_line_and_the_key_stays(meter, tmp_path):
    # a Data Readout client that was handed the master key: it can wrap, but may not transfer keys
    readout = json.loads((meter.data_dir / "credentials" / "data_readout.json").read_text())
    management = json.loads((meter.data_dir / "credentials" / "management.json").read_text())
    readout["master_key"] = management["master_key"]
    for field in [f for f in readout if f.endswith("_pem")]:  # relative to the credentials directory
        readout[field] = str(meter.data_dir / "credentials" / readout[field])
    forged = tmp_path / "readout-with-master-key.json"
    forged.write_text(json.dumps(readout))
    forged.chmod(0o600)
    ok(as_client(meter, "management", "consumer-key", "--key", KEY.hex()))
    line = one_error_line(smartmeter("client", "--port", str(meter.wrapper_port), "--credentials", str(forged),
                                     "consumer-key", "--key", bytes(range(16)).hex()))
    assert line.startswith("error: refused: 0-0:43.0.103.255 method 2 key_transfer: "), line
    counter, plaintext = decrypt(push_from_the_pty(meter), KEY)
    assert is_the_push(plaintext) and counter == 1


@pytest.mark.parametrize("key, message", [
    ("00112233445566778899AABBCCDDEE", "error: --key is 15 bytes; the consumer key is 16"),
    ("00112233445566778899AABBCCDDEEFF00", "error: --key is 17 bytes"),
    ("00112233445566778899AABBCCDDEEFF" * 2, "error: --key is 32 bytes"),
    ("", "error: --key is 0 bytes"),
    ("0011223344556677889XAABBCCDDEEFF", "is not hex"),
])
def test_a_key_that_is_not_16_bytes_is_one_line_before_the_meter_is_asked(tmp_path, key, message):
    # nothing listens on this port: the key is checked first
    line = one_error_line(smartmeter("client", "--port", str(free_port()), "--timeout", "2",
                                     "consumer-key", "--key", key))
    assert message in line, line
