"""Credentials files and the persisted invocation counter (hes/credentials.py), and the
secured MeterClient driven through a credentials file."""
from __future__ import annotations

import asyncio
import json
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dlms"))
from test_client_security import CLIENT_TITLE, ENERGY, KEYS, SECRET, SERVER_TITLE, FakeMeter  # noqa: E402

from smartmeter.dlms.client import POLICY_ALL_AUTHENTICATED_ENCRYPTED, GetExchange  # noqa: E402
from smartmeter.hes import pki  # noqa: E402
from smartmeter.hes.client import MeterClient  # noqa: E402
from smartmeter.hes.connection import HdlcLink, WrapperLink  # noqa: E402
from smartmeter.hes.credentials import (  # noqa: E402
    CredentialsError, FileCounterStore, client_from_options, counter_path, find_credentials, load_credentials,
    write_credentials,
)
from smartmeter.errors import SmartmeterError  # noqa: E402

EK, AK = KEYS[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def hls6(tmp_path: Path, **extra) -> Path:
    options = dict(client_sap=5, authentication=6, security_suite=0, security_policy=POLICY_ALL_AUTHENTICATED_ENCRYPTED,
                   client_system_title=CLIENT_TITLE, server_system_title=SERVER_TITLE, ek=EK, ak=AK,
                   hls_secret=SECRET, name="installation", interface="wz")
    options.update(extra)
    write_credentials(tmp_path / "installation.json", **options)
    return tmp_path / "installation.json"


@pytest.fixture(scope="module")
def demo_pki(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    pki.init_pki(directory, suite=1)
    return directory


# --------------------------------------------------------------------------- files


def test_round_trip_hls6_and_modes(tmp_path):
    path = hls6(tmp_path)
    loaded = load_credentials(path)
    assert (loaded.client_sap, loaded.server_sap, loaded.name, loaded.interface) == (5, 1, "installation", "wz")
    sec = loaded.security
    assert (sec.mechanism, sec.suite, sec.policy) == (6, 0, 0x6C)
    assert (sec.client_system_title, sec.server_system_title, sec.ek, sec.ak, sec.hls_secret) == \
        (CLIENT_TITLE, SERVER_TITLE, EK, AK, SECRET)
    assert isinstance(sec.invocation_counter, FileCounterStore)
    assert mode(path) == 0o600 and mode(counter_path(path)) == 0o600
    assert counter_path(path).name == "installation.fc"
    raw = json.loads(path.read_text())
    assert raw["ek"] == EK.hex().upper() and raw["authentication"] == 6


def test_round_trip_hls7_with_pki_files(tmp_path, demo_pki):
    index = pki.load_index(demo_pki)
    entry = index["clients"]["1"]["signing"]
    server_cert = demo_pki / index["clients"]["2"]["signing"]["certificate"]  # any P-256 certificate
    write_credentials(tmp_path / "creds" / "management.json", client_sap=1, authentication=7, security_suite=1,
                      security_policy=0x6C, client_system_title=pki.demo_client_system_title(1), ek=EK, ak=AK,
                      master_key=bytes(range(100, 116)), client_key_pem=demo_pki / entry["private_key"],
                      client_cert_pem=demo_pki / entry["certificate"], server_cert_pem=server_cert)
    loaded = load_credentials(tmp_path / "creds" / "management.json")
    sec = loaded.security
    assert sec.mechanism == 7 and sec.server_system_title is None  # learnt from the AARE
    assert sec.client_signing_key.public_key().public_numbers() == \
        pki.load_client_credentials(demo_pki, 1).signing_key.public_key().public_numbers()
    assert loaded.master_key == bytes(range(100, 116))
    assert loaded.client_cert_pem == (demo_pki / entry["certificate"]).resolve()


def _legacy_demo_credentials(site: Path, demo_pki: Path) -> Path:
    """Demo credentials as meters wrote them before paths were relative to the file: paths
    relative to the working directory the meter ran in (`site`, data dir `meter-data`)."""
    import shutil

    pki_dir = site / "meter-data" / "credentials" / "demo-pki"
    shutil.copytree(demo_pki, pki_dir)
    entry = pki.load_index(pki_dir)["clients"]["1"]["signing"]
    server_cert = pki.load_index(pki_dir)["clients"]["2"]["signing"]["certificate"]
    raw = {"client": "management", "client_sap": 1, "server_sap": 1, "interfaces": ["lan"], "authentication": 7,
           "security_suite": 1, "security_policy": 0x6C, "client_system_title": "4845530000000001",
           "ek": EK.hex(), "ak": AK.hex(),
           "client_key_pem": f"meter-data/credentials/demo-pki/{entry['private_key']}",
           "client_cert_pem": f"meter-data/credentials/demo-pki/{entry['certificate']}",
           "server_cert_pem": f"meter-data/credentials/demo-pki/{server_cert}"}
    path = pki_dir.parent / "management.json"
    path.write_text(json.dumps(raw))
    return path


def test_paths_written_relative_to_the_working_directory_still_load_from_anywhere(tmp_path, demo_pki, monkeypatch):
    site = tmp_path / "site"
    path = _legacy_demo_credentials(site, demo_pki)
    expected = pki.load_client_credentials(demo_pki, 1).signing_key.public_key().public_numbers()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, given in ((site, Path("meter-data/credentials/management.json")), (site, path),
                       (elsewhere, path), (site / "meter-data", Path("credentials/management.json")),
                       (path.parent, Path("management.json"))):
        monkeypatch.chdir(cwd)
        loaded = load_credentials(given)
        assert loaded.security.client_signing_key.public_key().public_numbers() == expected, (cwd, given)
        assert loaded.client_cert_pem.resolve() == (path.parent / "demo-pki").resolve() / \
            pki.load_index(demo_pki)["clients"]["1"]["signing"]["certificate"]


def test_paths_relative_to_the_file_load_from_any_working_directory(tmp_path, demo_pki, monkeypatch):
    path = _legacy_demo_credentials(tmp_path / "site", demo_pki)
    raw = json.loads(path.read_text())
    for field in ("client_key_pem", "client_cert_pem", "server_cert_pem"):
        raw[field] = raw[field].removeprefix("meter-data/credentials/")
    path.write_text(json.dumps(raw))
    for cwd in (tmp_path, tmp_path / "site", path.parent):
        monkeypatch.chdir(cwd)
        assert load_credentials(path).security.client_signing_key is not None


def test_a_path_found_nowhere_names_where_it_was_looked_for(tmp_path, demo_pki, monkeypatch):
    path = _legacy_demo_credentials(tmp_path / "site", demo_pki)
    raw = json.loads(path.read_text())
    raw["client_key_pem"] = "meter-data/credentials/demo-pki/gone.key.pem"
    path.write_text(json.dumps(raw))
    monkeypatch.chdir(tmp_path / "site")
    with pytest.raises(CredentialsError, match="client_key_pem: .*gone.key.pem does not exist"):
        load_credentials(path)


BAD_FIELDS = [
    ("client_sap", 0, "client_sap"),
    ("client_sap", "1", "client_sap"),
    ("authentication", 3, "authentication"),
    ("security_suite", 5, "security_suite"),
    ("security_policy", 0x101, "security_policy"),
    ("security_policy", 0x6D, "security_policy"),
    ("ek", "00", "ek: must be 16 bytes"),
    ("ak", "zz" * 16, "ak: is not valid hex"),
    ("client_system_title", "0102", "client_system_title"),
    ("hls_secret", None, "hls_secret"),
    ("interface", "usb", "interface"),
    ("typo_field", 1, "typo_field: unknown field"),
    ("client_key_pem", "missing.pem", "client_key_pem"),
    ("format", "something/2", "format"),
    ("use_dedicated_key", "yes", "use_dedicated_key"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS)
def test_bad_fields_give_one_line_errors_naming_the_field(tmp_path, field, value, message):
    path = hls6(tmp_path)
    raw = json.loads(path.read_text())
    raw[field] = value
    path.write_text(json.dumps(raw))
    with pytest.raises(CredentialsError, match=message) as caught:
        load_credentials(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert isinstance(caught.value, SmartmeterError)


@pytest.mark.parametrize("content, message", [
    (None, "no such credentials file"), ("{", "not valid JSON"), ("[1]", "JSON object"),
])
def test_unreadable_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CredentialsError, match=message) as caught:
        load_credentials(path)
    assert "\n" not in str(caught.value)


def test_hls7_without_key_files_is_refused_naming_the_field(tmp_path):
    with pytest.raises(CredentialsError, match="client_key_pem"):
        write_credentials(tmp_path / "m.json", client_sap=1, authentication=7, security_suite=1, security_policy=0x6C,
                          client_system_title=CLIENT_TITLE, ek=EK, ak=AK)
    assert not (tmp_path / "m.json").exists()  # nothing written when invalid


def test_find_credentials_by_client_sap(tmp_path):
    hls6(tmp_path)
    write_credentials(tmp_path / "public.json", client_sap=16, authentication=0)
    assert find_credentials(tmp_path, 5).name == "installation.json"
    assert find_credentials(tmp_path, 16).name == "public.json"
    with pytest.raises(CredentialsError, match="no credentials files for client SAP 1"):
        find_credentials(tmp_path, 1)


# --------------------------------------------------------------------------- counters


def test_counter_is_on_disk_before_it_is_returned(tmp_path):
    store = FileCounterStore(tmp_path / "c.fc")
    for expected in range(5):
        counter = store.reserve()
        assert counter == expected
        on_disk = json.loads((tmp_path / "c.fc").read_text())["client_invocation_counter"]
        assert on_disk == counter


def test_counter_never_repeats_across_a_crash_after_persisting(tmp_path):
    store = FileCounterStore(tmp_path / "c.fc")
    used = [store.reserve() for _ in range(3)]
    lost = store.reserve()  # persisted, then the process dies before sending
    del store
    restarted = FileCounterStore(tmp_path / "c.fc")
    after = [restarted.reserve() for _ in range(3)]
    assert min(after) > lost > max(used)


def test_two_processes_with_the_same_credentials_never_share_a_counter(tmp_path):
    a, b = FileCounterStore(tmp_path / "c.fc"), FileCounterStore(tmp_path / "c.fc")
    seen = [store.reserve() for _ in range(20) for store in (a, b)]
    assert len(seen) == len(set(seen)) == 40


def test_damaged_counter_file_is_an_error_not_a_restart(tmp_path):
    path = tmp_path / "c.fc"
    path.write_text('{"client_invocation_counter": -1, "server_invocation_counter": null}')
    with pytest.raises(CredentialsError, match="client_invocation_counter"):
        FileCounterStore(path)
    path.write_text("{}")
    with pytest.raises(CredentialsError, match="missing"):
        FileCounterStore(path)


def test_rewriting_with_the_same_ek_keeps_the_counter_and_a_new_ek_resets_it(tmp_path):
    path = hls6(tmp_path)
    store = load_credentials(path).security.invocation_counter
    for _ in range(7):
        store.reserve()
    hls6(tmp_path, name="renamed")  # same EK
    assert load_credentials(path).security.invocation_counter.last_used == 6
    hls6(tmp_path, ek=b"\x77" * 16)  # a new key: nothing sent under it yet
    assert load_credentials(path).security.invocation_counter.last_used is None


def test_advance_to_only_moves_forward(tmp_path):
    store = FileCounterStore(tmp_path / "c.fc")
    store.reserve()
    store.advance_to(1000)
    assert store.reserve() == 1001
    store.advance_to(5)
    assert store.reserve() == 1002


# --------------------------------------------------------------------------- CLI support and MeterClient


def test_client_from_options_takes_addressing_from_the_file(tmp_path):
    path = hls6(tmp_path)
    link, security = client_from_options(credentials=path, host="h", port=None, hdlc=None, client_sap=None,
                                         server_sap=None, physical_address=0x10, timeout=1.0)
    assert isinstance(link, HdlcLink)  # interface "wz"
    assert security.mechanism == 6
    link, _ = client_from_options(credentials=path, host="h", port=9, hdlc=False, client_sap=5, server_sap=None,
                                  physical_address=0x10, timeout=1.0)
    assert isinstance(link, WrapperLink) and (link.client_sap, link.server_sap, link.port) == (5, 1, 9)
    with pytest.raises(CredentialsError, match="--client-sap 16 conflicts"):
        client_from_options(credentials=path, host="h", port=None, hdlc=None, client_sap=16, server_sap=None,
                            physical_address=0x10, timeout=1.0)
    link, security = client_from_options(credentials=None, host="h", port=None, hdlc=None, client_sap=None,
                                         server_sap=None, physical_address=0x10, timeout=1.0)
    assert security is None and isinstance(link, WrapperLink) and link.client_sap == 16 and link.port == 4059


class FakeLink:
    def __init__(self, meter: FakeMeter) -> None:
        self.meter, self.opened, self.closed = meter, 0, 0

    async def open(self) -> None:
        self.opened += 1

    async def exchange(self, apdu: bytes) -> bytes:
        if apdu[0] == 0x62:
            return bytes.fromhex("6300")
        return self.meter.handle(apdu)

    async def close(self) -> None:
        self.closed += 1


def test_meter_client_with_credentials_persists_counters_across_runs(tmp_path):
    path = hls6(tmp_path)
    meter = FakeMeter(mechanism=6, suite=0, policy=POLICY_ALL_AUTHENTICATED_ENCRYPTED, server_counter=1000)

    async def session():
        async with MeterClient(FakeLink(meter), security=load_credentials(path).security) as client:
            return await client.run(GetExchange(ENERGY))

    first = asyncio.run(session())
    state = json.loads(counter_path(path).read_text())
    assert state["client_invocation_counter"] == max(meter.received_counters) + 1  # the RLRQ's counter
    assert state["server_invocation_counter"] == meter.tx.last_used
    second = asyncio.run(session())
    assert first == second
    assert len(set(meter.received_counters)) == len(meter.received_counters)
    assert sorted(meter.received_counters) == meter.received_counters


# --------------------------------------------------------------------------- provisioning (cli/pki.py)

import datetime as dt  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from click.testing import CliRunner  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from smartmeter.cli.pki import CLIENT_PLANS, ProvisionError, pki_group, provision  # noqa: E402
from smartmeter.dlms.apdu.common import ActionResult  # noqa: E402
from smartmeter.dlms.client import AccessDenied  # noqa: E402
from smartmeter.dlms.security import keys as keymod  # noqa: E402
from smartmeter.dlms.security.certificates import (  # noqa: E402
    CertificateError, CertificateStore, identification_from_data, make_csr,
)
from smartmeter.cosem.data import Data  # noqa: E402

PKI_TIME = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
NOW = PKI_TIME + dt.timedelta(days=1)
METER_TITLE = bytes.fromhex("4B464D1000000001")
MASTER = bytes(range(200, 216))


class FakeSecurityMeter:
    """The IC 64 / IC 15 methods provisioning uses, over our CertificateStore and key wrap,
    with the call signature of MeterClient (get/action/association)."""

    def __init__(self, pki_dir: Path, root_only: bool = False) -> None:
        self.store = CertificateStore(METER_TITLE, suite=1)
        if root_only:
            index = pki.load_index(pki_dir)
            self.store.install_root((pki_dir / index["root"]["certificate"]).read_bytes(), NOW)
        else:
            pki.provision_store(pki_dir, self.store, NOW)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.pending = None
        self.store.set_meter_key(self.key.public_key())
        self.keys: dict[int, tuple[bytes, bytes]] = {}
        self.secrets: dict[int, bytes] = {}
        self.calls: list[tuple[str, int, int]] = []
        self.rekeyed: list[tuple[bytes, bytes]] = []
        self.association = SimpleNamespace(server_system_title=METER_TITLE,
                                           rekey=lambda ek, ak, counters: self.rekeyed.append((ek, ak)))

    @staticmethod
    def _sap(obis) -> int | None:
        sap = obis.to_bytes()[4]
        return None if sap == 0 else sap

    async def get(self, obis, attribute, class_id=None):
        assert (class_id, attribute) == (64, 6)
        return Data.array(info.to_data() for info in self.store.certificate_infos(self._sap(obis)))

    async def action(self, obis, method, parameters=None, class_id=None):
        sap = self._sap(obis)
        self.calls.append((str(obis), class_id, method))
        if sap is not None and sap not in CLIENT_PLANS:
            raise AccessDenied(ActionResult.OBJECT_UNDEFINED, "action")
        try:
            if class_id == 15 and method == 2:
                self.secrets[sap] = keymod.unwrap_key(MASTER, parameters.value)
            elif method == 2:
                transfer = {t.key_id: t.unwrap(MASTER) for t in keymod.decode_key_transfer(parameters)}
                self.keys[sap] = (transfer[keymod.KeyId.GLOBAL_UNICAST_ENCRYPTION], transfer[keymod.KeyId.AUTHENTICATION])
            elif method == 4:
                assert parameters == Data.enum(0)
                self.pending = ec.generate_private_key(ec.SECP256R1())
                self.store.begin_key_renewal(self.pending.public_key(), NOW)
            elif method == 5:
                return Data.octet_string(make_csr(self.pending, METER_TITLE, 1))
            elif method == 6:
                result = self.store.import_certificate(parameters.value, NOW, client=sap)
                if result.key_pair_activated:
                    self.key, self.pending = self.pending, None
            elif method == 8:
                self.store.remove_certificate(identification_from_data(parameters), client=sap)
            else:
                raise AssertionError(method)
        except (CertificateError, keymod.KeyUnwrapError) as exc:
            raise AccessDenied(ActionResult.OTHER_REASON, str(exc)) from None
        return None


@pytest.fixture
def fixed_pki(tmp_path) -> Path:
    directory = tmp_path / "pki"
    pki.init_pki(directory, suite=1, now=PKI_TIME)
    return directory


DELIVERED_CERTIFICATION_SECRET = bytes(range(32))


def bootstrap_credentials(tmp_path: Path, pki_dir: Path) -> "Credentials":
    entry = pki.load_index(pki_dir)["clients"]["1"]["signing"]
    # the certification client's delivered credentials: provisioning keeps its HLS secret
    write_credentials(
        tmp_path / "bootstrap" / "certification.json", client_sap=7, authentication=6, security_suite=1,
        security_policy=0x6C, client_system_title=bytes.fromhex("4b464d0000000007"), ek=EK, ak=AK,
        hls_secret=DELIVERED_CERTIFICATION_SECRET, interface="wz")
    return write_credentials(
        tmp_path / "bootstrap" / "management.json", client_sap=1, authentication=7, security_suite=1,
        security_policy=0x6C, client_system_title=pki.demo_client_system_title(1), ek=EK, ak=AK, master_key=MASTER,
        client_key_pem=pki_dir / entry["private_key"], client_cert_pem=pki_dir / entry["certificate"],
        server_cert_pem=pki_dir / pki.load_index(pki_dir)["clients"]["2"]["signing"]["certificate"])


def test_provision_installs_keys_secrets_and_the_meter_certificate_and_writes_credentials(tmp_path, fixed_pki):
    meter = FakeSecurityMeter(fixed_pki)
    old_meter_key = meter.key
    bootstrap = bootstrap_credentials(tmp_path, fixed_pki)
    out = tmp_path / "creds"
    written = asyncio.run(provision(meter, fixed_pki, out, bootstrap, now=NOW))
    assert sorted(p.name for p in written) == sorted(
        [f"{plan.name}.json" for plan in CLIENT_PLANS.values()] + ["public.json"])
    # the meter generated a new key pair, and its certificate activated it
    assert meter.key is not old_meter_key and meter.pending is None
    for plan in CLIENT_PLANS.values():
        loaded = load_credentials(out / f"{plan.name}.json")
        sec = loaded.security
        assert (loaded.client_sap, sec.mechanism, sec.suite, sec.policy) == (plan.sap, plan.mechanism, 1, plan.policy)
        assert (sec.ek, sec.ak) == meter.keys[plan.sap]
        assert sec.server_system_title == METER_TITLE
        assert sec.invocation_counter.last_used is None  # new keys: nothing sent under them yet
        assert mode(out / f"{plan.name}.json") == 0o600
        if plan.name == "certification":  # held by the legal part: kept, never sent
            assert sec.hls_secret == DELIVERED_CERTIFICATION_SECRET and plan.sap not in meter.secrets
        elif plan.mechanism == 6:
            assert sec.hls_secret == meter.secrets[plan.sap] and len(sec.hls_secret) == 32
        else:
            # HLS 7: the server key in the credentials is the meter's new signing key
            assert sec.server_signing_key.public_numbers() == meter.key.public_key().public_numbers()
        assert (loaded.master_key is not None) == plan.holds_master_key
    # the management client's own keys were changed last, then the association switched
    key_transfers = [c for c in meter.calls if c[1] == 64 and c[2] == 2]
    assert key_transfers[-1][0] == "0-0:43.0.1.255"
    assert meter.rekeyed == [meter.keys[1]]
    assert len({meter.keys[s] for s in meter.keys}) == len(meter.keys)  # every client its own keys


def test_provision_twice_imports_nothing_already_there(tmp_path, fixed_pki):
    meter = FakeSecurityMeter(fixed_pki)
    bootstrap = bootstrap_credentials(tmp_path, fixed_pki)
    asyncio.run(provision(meter, fixed_pki, tmp_path / "a", bootstrap, now=NOW))
    meter.calls.clear()
    asyncio.run(provision(meter, fixed_pki, tmp_path / "b", bootstrap, now=NOW, clients=(2,)))
    imports = [c for c in meter.calls if c[2] == 6]
    assert imports == [("0-0:43.0.1.255", 64, 6)]  # only the meter's renewed certificate


def test_provision_imports_sub_cas_and_client_certificates_a_meter_lacks(tmp_path, fixed_pki):
    meter = FakeSecurityMeter(fixed_pki, root_only=True)
    asyncio.run(provision(meter, fixed_pki, tmp_path / "out", bootstrap_credentials(tmp_path, fixed_pki), now=NOW))
    imports = [c[0] for c in meter.calls if c[2] == 6]
    # sub-CAs and the meter's certificate through the Management client's own security setup
    assert imports == ["0-0:43.0.1.255"] * 3 + ["0-0:43.0.1.255", "0-0:43.0.2.255", "0-0:43.0.4.255",
                                                  "0-0:43.0.1.255"]
    assert len(meter.store.sub_cas) == 3
    for sap in (1, 2, 4):
        assert len(meter.store.client_certificates(sap)) == 1


def test_provision_refuses_a_pki_the_meter_does_not_trust(tmp_path, fixed_pki):
    other = tmp_path / "other-pki"
    pki.init_pki(other, suite=1, now=PKI_TIME)
    meter = FakeSecurityMeter(other)
    with pytest.raises(ProvisionError, match="root") as caught:
        asyncio.run(provision(meter, fixed_pki, tmp_path / "out", bootstrap_credentials(tmp_path, fixed_pki), now=NOW))
    assert "\n" not in str(caught.value)
    assert not meter.keys  # nothing changed on the meter


def test_provision_skips_clients_the_meter_does_not_have(tmp_path, fixed_pki):
    meter = FakeSecurityMeter(fixed_pki)
    lines: list[str] = []
    original = meter.action

    async def no_plc(obis, method, parameters=None, class_id=None):
        if str(obis) == "0-0:43.0.4.255":
            raise AccessDenied(ActionResult.OBJECT_UNDEFINED, "action")
        return await original(obis, method, parameters, class_id)

    meter.action = no_plc
    written = asyncio.run(provision(meter, fixed_pki, tmp_path / "out", bootstrap_credentials(tmp_path, fixed_pki),
                                    now=NOW, clients=(1, 4, 5), say=lines.append))
    assert sorted(p.name for p in written) == ["installation.json", "management.json", "public.json"]
    assert any("client 4" in line and "skipped" in line for line in lines)


def test_pki_init_command(tmp_path):
    result = CliRunner().invoke(pki_group, ["init", str(tmp_path / "p"), "--suite", "2"])
    assert result.exit_code == 0, result.output
    assert "suite 2" in result.output and "NOT FOR PRODUCTION" in result.output
    assert pki.load_index(tmp_path / "p")["suite"] == 2


def test_pki_provision_command_rejects_bad_addresses(tmp_path, fixed_pki):
    bootstrap_credentials(tmp_path, fixed_pki)
    result = CliRunner().invoke(pki_group, ["provision", "--meter", "nohost", "--pki", str(fixed_pki),
                                            "--bootstrap", str(tmp_path / "bootstrap"), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, ProvisionError) and "HOST:PORT" in str(result.exception)


# --------------------------------------------------------------------------- totality of the loader

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=70),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=6)
_FIELDS = ["client_sap", "server_sap", "authentication", "security_suite", "security_policy", "client_system_title",
           "server_system_title", "ek", "ak", "hls_secret", "master_key", "interface", "interfaces", "name",
           "use_dedicated_key", "client_key_pem", "server_cert_pem", "format", "note"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=4))
def test_any_field_values_load_or_give_one_line_credentials_errors(tmp_path, changes):
    path = tmp_path / "fuzz.json"
    if not path.exists():
        hls6(tmp_path)
        (tmp_path / "installation.json").rename(path)
        counter_path(tmp_path / "installation.json").rename(counter_path(path))
    raw = json.loads(json.dumps({"client_sap": 5, "authentication": 6, "security_policy": 0x6C,
                                 "client_system_title": CLIENT_TITLE.hex(), "ek": EK.hex(), "ak": AK.hex(),
                                 "hls_secret": SECRET.hex()}))
    raw.update(changes)
    path.write_text(json.dumps(raw))
    try:
        load_credentials(path)
    except CredentialsError as exc:
        assert "\n" not in str(exc)
