"""`smartmeter client consumer-key`: give the consumer information push (H1, companion §10.5;
catalog §7 "CIP") a new key, as a head-end does:

    smartmeter client --credentials management.json consumer-key [--key HEX]

The key is the global unicast encryption key of the CIP client's security setup
0-0:43.0.103.255 (IC 64), set with key_transfer (method 2: array of {key_id 0, key_wrapped}),
wrapped with the master key (KEK) of the credentials: only a client that holds one and may
invoke the method can do it (the Management client; the Maintenance client on the optical port). Only that key and only that setup: the other clients' keys
are `smartmeter pki provision`'s. Without --key a random one is made (`secrets`) and printed
once; the consumer device needs it to decrypt, and the meter never shows it again. A new key
resets the CIP client's sending counter, so the next push carries counter 1.

The command is attached to `client` by smartmeter.cli.main; the association comes from there.
"""
from __future__ import annotations

import json
import secrets

import click

from smartmeter.cli import UsageProblem

__all__ = ["consumer_key"]

CIP_SECURITY_SETUP = "0-0:43.0.103.255"  # Security setup - Consumer Information client (SAP 103)
SECURITY_SETUP_CLASS, KEY_TRANSFER = 64, 2
KEY_BYTES = 16  # suite 1 (the CIP client's, §3.6.9): AES-128
MANAGEMENT_HINT = ("give the --credentials of a client that holds the master key and may transfer keys: "
                   "management (or maintenance on the optical port)")


def parse_key(text: str) -> bytes:
    """--key HEX -> the 16 octets of an AES-128 key; one UsageProblem line otherwise."""
    compact = "".join(text.split())
    try:
        key = bytes.fromhex(compact)
    except ValueError:
        raise UsageProblem(f"--key {text!r} is not hex", "give 16 bytes as 32 hex digits, "
                           "e.g. --key 000102030405060708090A0B0C0D0E0F, or no --key for a random one") from None
    if len(key) != KEY_BYTES:
        raise UsageProblem(f"--key is {len(key)} bytes; the consumer key is {KEY_BYTES} (AES-128, suite 1)",
                           "give 32 hex digits, or no --key for a random one")
    return key


def _master_key(ctx: click.Context) -> bytes:
    from smartmeter.hes.credentials import CredentialsError, load_credentials

    path = ctx.obj.get("credentials")
    if path is None:
        raise UsageProblem("the consumer key is wrapped with the master key of the client's credentials",
                           MANAGEMENT_HINT)
    try:
        master = load_credentials(path).master_key
    except CredentialsError as exc:
        raise UsageProblem(str(exc), MANAGEMENT_HINT) from None
    if master is None:
        raise UsageProblem(f"{path} holds no master_key to wrap the consumer key with", MANAGEMENT_HINT)
    return master


@click.command("consumer-key")
@click.option("--key", "key_text", default=None, metavar="HEX",
              help="The new consumer key (16 bytes in hex) [default: a random one, printed once].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def consumer_key(ctx: click.Context, key_text: str | None, as_json: bool) -> None:
    """Set the consumer key of the H1 push: key_transfer of the CIP client's global unicast
    encryption key to 0-0:43.0.103.255 (a Management client's --credentials). Without --key a
    random key is made and printed: give it to the consumer device, it is not shown again."""
    from smartmeter.cli.main import _result_name, _run_client
    from smartmeter.dlms.client import AccessDenied
    from smartmeter.dlms.security.keys import KeyId, KeyTransfer, encode_key_transfer

    key = parse_key(key_text) if key_text is not None else None  # before anything is sent
    master = _master_key(ctx)
    generated = key is None
    if key is None:
        key = secrets.token_bytes(KEY_BYTES)
    transfer = encode_key_transfer([KeyTransfer.wrap(master, KeyId.GLOBAL_UNICAST_ENCRYPTION, key)])

    async def work(c):
        try:
            await c.action(CIP_SECURITY_SETUP, KEY_TRANSFER, transfer, class_id=SECURITY_SETUP_CLASS)
        except AccessDenied as exc:
            raise UsageProblem(f"refused: {CIP_SECURITY_SETUP} method {KEY_TRANSFER} key_transfer: "
                               f"{_result_name(exc.result)}", MANAGEMENT_HINT) from None

    _run_client(ctx, work)
    if as_json or ctx.obj["json"]:
        answer = {"security_setup": CIP_SECURITY_SETUP, "key_id": int(KeyId.GLOBAL_UNICAST_ENCRYPTION),
                  "generated": generated}
        if generated:
            answer["key"] = key.hex().upper()
        click.echo(json.dumps(answer))
        return
    click.echo(f"transferred the consumer key to {CIP_SECURITY_SETUP} (the CIP client's global unicast "
               "encryption key); the next push carries frame counter 1")
    if generated:
        click.echo(f"consumer key: {key.hex().upper()}")
        click.echo("give it to the consumer device; it is not shown again", err=True)
