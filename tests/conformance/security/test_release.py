"""Releasing a ciphered association (companion standard §3.3.3, Table 5): the RLRQ's
InitiateRequest comes ciphered; a genuine one releases with a ciphered answer, a tampered
one does not release anything."""
from __future__ import annotations

from test_access_matrix import MODEL, Session, counters, meter  # noqa: F401  (fixtures)

from smartmeter.dlms.apdu import acse
from smartmeter.dlms.apdu.ciphered import GloInitiateResponse, decode_ciphered


def test_genuine_ciphered_release(meter, counters):  # noqa: F811
    s = Session(meter, MODEL.clients["management"], counters["management"])
    rlre = acse.decode_acse(s.server.handle(s.association.release_request()))
    assert rlre.reason == 0
    assert isinstance(decode_ciphered(rlre.user_information), GloInitiateResponse)
    assert not s.server.associated


def test_tampered_release_keeps_the_association(meter, counters):  # noqa: F811
    s = Session(meter, MODEL.clients["management"], counters["management"])
    request = acse.decode_acse(s.association.release_request())
    damaged = bytearray(request.user_information)
    damaged[-1] ^= 0x01
    rlre = acse.decode_acse(s.server.handle(acse.RLRQ(reason=0, user_information=bytes(damaged)).to_bytes()))
    assert rlre.reason == acse.ReleaseResponseReason.NOT_FINISHED and rlre.user_information is None
    assert s.server.associated  # still open: the next genuine request is served
    s.close()
    assert not s.server.associated
