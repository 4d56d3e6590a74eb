"""Public keys that may sign the release manifest of legal/ (the trust anchors of `identification`).

This file is inside legal/, so it is covered by the software ID: whoever adds a key to sign
modified software also changes the digest that the display, 1-0:0.2.8.255 and the type
examination certificate show.

RELEASE_KEYS: offline release keys (their private halves never enter the repository). A
manifest signed by one of them is a release. None is anchored yet.

DEVELOPMENT_KEYS: keys generated locally by `scripts/sign_release.py` (private half under
~/.config/smartmeter/, never committed), one per developer who has re-signed legal/. A
manifest signed by one of them verifies, but the meter, `smartmeter id` and 1-0:0.2.0.255
say DEVELOPMENT. The key that used to be committed in scripts/sign_release.py is in git
history and therefore public: it is not anchored here and must never be.

Maintained by scripts/sign_release.py (it appends the developer's key when it signs).
"""

# key id (first 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo) -> PEM
RELEASE_KEYS: dict[str, bytes] = {}

# key id -> (PEM, who generated it, when)
DEVELOPMENT_KEYS: dict[str, tuple[bytes, str]] = {
    '13ba54be795ca270': (
        b'-----BEGIN PUBLIC KEY-----\n'
        b'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE0Nv4g8QQa9kdYSPvrVcOvvEoX7gd\n'
        b'3lOeY6p0uTeW1n0/C4Y+DIORvX40rU4bCZYvbz/qjC6UE/QFiqvha1hPTQ==\n'
        b'-----END PUBLIC KEY-----\n',
        'root@vm 2026-12-04',
    ),
    '145f35b4e0b05036': (
        b'-----BEGIN PUBLIC KEY-----\n'
        b'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEcy6X74Dq/j27kzcY9IRozVVXYBhU\n'
        b'tQRJ2qSeVQW2jZFCllv1mMAmp+2NGHAZ4nfY36uIV18Hpd/+F7PemHmu4A==\n'
        b'-----END PUBLIC KEY-----\n',
        'root@vm 2026-12-04',
    ),
    '343534bc6f406070': (
        b'-----BEGIN PUBLIC KEY-----\n'
        b'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvOjDu6vvUbWOXD601oRSxQN5cPdC\n'
        b'R0lq8MmFv9YYJk9xLblFOy0Io9JrOLWFpObG1U3HTvlfmQQBYrCfqRSlHQ==\n'
        b'-----END PUBLIC KEY-----\n',
        'root@vm 2026-12-04',
    ),
    '66abba96a1356aad': (
        b'-----BEGIN PUBLIC KEY-----\n'
        b'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEY2eFl2GTxpEVEkoS0SCCenDKZGB5\n'
        b'fwLW/0wavD4m2dNl4epSAkgbs/9QEKyHO02blTXhirG5ozz7a1BsciZYCQ==\n'
        b'-----END PUBLIC KEY-----\n',
        'root@vm 2026-12-04',
    ),
}
