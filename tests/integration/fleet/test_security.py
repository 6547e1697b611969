"""Security against a real redis-server: each role runs its part under the rules
`fabric acl` prints and is refused the rest; TLS end to end; credentials never
shown, on success or error paths."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio

from fabric_worker.broker.connection import redact
from fabric_worker.broker.heartbeat import publish
from fabric_worker.dev.redis_server import RedisServer, free_port
from fabric_worker.fleet.acl import Role
from fabric_worker.telemetry.status import WorkerStatus
from fabric_worker.wire.keys import Keys
from tests.integration.harness import WorkerProcess

pytestmark = pytest.mark.integration

NS = "sec"
KEYS = Keys(NS)
OTHER = Keys("sec2")  # shares a prefix with NS: the patterns must still keep it out
PASSWORDS = {
    Role.PRODUCER: "Pr0d-pw-5d1e7c",
    Role.WORKER: "W0rk-pw-8a2f4b",
    Role.READER: "R3ad-pw-c39e01",
}
ADMIN, ADMIN_PW = "fabric-admin", "Adm1n-pw-77b0e2"
WRONG_PW = "Wr0ng-pw-e5a9d3"
SECRETS = [*PASSWORDS.values(), ADMIN_PW, WRONG_PW]
POISON = 7


def url_for(port: int, user: str = "", password: str = "", scheme: str = "redis") -> str:
    auth = f"{user}:{password}@" if password else ""
    return f"{scheme}://{auth}127.0.0.1:{port}/0"


def role_url(port: int, role: Role) -> str:
    return url_for(port, f"fabric-{role.value}", PASSWORDS[role])


def fabric_env(url: str, namespace: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    return {**env, "FABRIC_REDIS_URL": url, "FABRIC_NAMESPACE": namespace, **(extra or {})}


def fabric(
    url: str, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None, ns: str = NS
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric_worker", *args],
        input=stdin.decode(),
        env=fabric_env(url, ns, env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def jsonl(prefix: str, n: int, *, poison: bool = False) -> bytes:
    jobs = [{"tokens": [1, 10 + i, 3], "max_new_tokens": 3, "id": f"{prefix}{i}"} for i in range(n)]
    if poison:
        jobs.append({"tokens": [1, POISON], "max_new_tokens": 2, "id": f"{prefix}-poison"})
    return b"".join(orjson.dumps(job) + b"\n" for job in jobs)


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server whose only users are the three roles (rules from `fabric acl`)
    and an admin; the default user is off. DEBUG is enabled so that refusing
    it below is the ACL's doing, not the server config's."""
    server = RedisServer(
        tmp_path_factory.mktemp("acl"), extra_args=["--enable-debug-command", "yes"]
    )
    server.start()
    try:
        env = {f"PW_{role.value}": pw for role, pw in PASSWORDS.items()}
        specs = [f"--password-env={role.value}=PW_{role.value}" for role in Role]
        printed = fabric(server.url, "acl", *specs, env=env)  # --server-version auto
        assert printed.returncode == 0, printed.stderr
        assert not any(pw in printed.stdout for pw in SECRETS)
        with redis.Redis.from_url(server.url) as default:
            for line in printed.stdout.splitlines():
                tokens = shlex.split(line)
                assert tokens[:2] == ["ACL", "SETUSER"], line
                default.execute_command(*tokens)
            default.acl_setuser(
                ADMIN,
                enabled=True,
                passwords=[f"+{ADMIN_PW}"],
                keys=["*"],
                channels=["*"],
                commands=["+@all"],
            )
            default.execute_command("ACL", "SETUSER", "default", "off")
        admin = url_for(server.port, ADMIN, ADMIN_PW)
        init = fabric(admin, "init", "--lanes", "64,128", "--lease-s", "1", "--max-deliveries", "2")
        assert init.returncode == 0, init.stderr
        yield server
    finally:
        server.close()


def admin_client(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, username=ADMIN, password=ADMIN_PW)


def role_client(server: RedisServer, role: Role) -> redis.Redis:
    return redis.Redis(port=server.port, username=f"fabric-{role.value}", password=PASSWORDS[role])


def test_each_role_does_its_part_under_its_acl_user(
    acl_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = acl_server.port
    with admin_client(acl_server) as admin:
        admin.acl_log_reset()
    submitted = fabric(
        role_url(port, Role.PRODUCER), "submit", "-", stdin=jsonl("e", 20, poison=True)
    )
    assert (submitted.returncode, submitted.stdout) == (0, "submitted 21, duplicates 0\n")
    # The worker takes its credentials from the environment, not the URL.
    monkeypatch.setenv("FABRIC_REDIS_USERNAME", "fabric-worker")
    monkeypatch.setenv("FABRIC_REDIS_PASSWORD", PASSWORDS[Role.WORKER])
    worker = WorkerProcess(
        url_for(port), NS, tmp_path, "--burst", "--fault", f"poison_token={POISON}"
    )
    try:
        assert worker.wait(60) == 0, worker.log
    finally:
        worker.stop()
    assert "dead-lettered 1" in worker.log
    results = fabric(role_url(port, Role.READER), "results")
    assert results.returncode == 0, results.stderr
    ids = sorted(orjson.loads(line)["id"] for line in results.stdout.splitlines())
    assert ids == sorted(f"e{i}" for i in range(20))
    inspected = fabric(role_url(port, Role.READER), "inspect", "--json")
    assert inspected.returncode == 0, inspected.stderr
    lanes = orjson.loads(inspected.stdout)["lanes"]
    assert (sum(v["results"] for v in lanes), sum(v["dead"] for v in lanes)) == (20, 1)
    # Heartbeats: the worker's publish (broker/status.py), read by health and top.
    with admin_client(acl_server) as admin:
        admin.zadd(KEYS.workers, {"long-gone": 1.0})
    asyncio.run(publish_heartbeat(acl_server, "gpu0"))
    healthy = fabric(role_url(port, Role.READER), "health", "--consumer", "gpu0")
    assert (healthy.returncode, healthy.stderr) == (0, ""), healthy.stdout
    shown = fabric(role_url(port, Role.READER), "top", "--once")
    assert shown.returncode == 0 and "gpu0" in shown.stdout, shown.stderr
    # Nothing was refused on the way, not even a call a client swallows, but
    # the worker's check of maxmemory-policy: no role may CONFIG GET (it would
    # show secrets), so the worker says it cannot check and goes on.
    assert "cannot read maxmemory-policy" in worker.log
    with admin_client(acl_server) as admin:
        refused = [entry["object"] for entry in admin.acl_log()]
        assert refused in ([], ["config|get"]), refused
        assert admin.zscore(KEYS.workers, "long-gone") is None  # pruned by the worker


def test_each_role_does_its_batch_part_under_its_acl_user(
    acl_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = acl_server.port
    producer, reader = role_url(port, Role.PRODUCER), role_url(port, Role.READER)
    with admin_client(acl_server) as admin:
        admin.acl_log_reset()
    for name, prefix in (("served", "bs"), ("stopped", "bc")):
        sent = fabric(producer, "submit", "-", "--batch", name, stdin=jsonl(prefix, 3, poison=True))
        assert sent.returncode == 0, sent.stderr
    cancelled = fabric(producer, "batch", "cancel", "stopped")
    assert "cancelled 4 job(s)" in cancelled.stdout, cancelled.stderr
    monkeypatch.setenv("FABRIC_REDIS_USERNAME", "fabric-worker")
    monkeypatch.setenv("FABRIC_REDIS_PASSWORD", PASSWORDS[Role.WORKER])
    worker = WorkerProcess(
        url_for(port), NS, tmp_path, "--burst", "--fault", f"poison_token={POISON}"
    )
    try:
        assert worker.wait(60) == 0, worker.log
    finally:
        worker.stop()
    waited = fabric(producer, "batch", "wait", "served", "--timeout", "30")
    assert "total 4, done 3, dead 1, cancelled 0, left 0" in waited.stdout, waited.stderr
    status = orjson.loads(fabric(reader, "batch", "status", "stopped", "--json").stdout)
    assert (status["cancelled"], status["left"]) == (4, 0)
    shown = fabric(reader, "batch", "results", "served")
    assert shown.returncode == 0, shown.stderr
    states = sorted(orjson.loads(line)["state"] for line in shown.stdout.splitlines())
    assert states == ["dead", "done", "done", "done"]
    listed = fabric(reader, "batch", "list")
    assert listed.returncode == 0 and "batch served" in listed.stdout, listed.stderr
    with admin_client(acl_server) as admin:
        refused = [entry["object"] for entry in admin.acl_log()]
        assert refused in ([], ["config|get"]), refused


async def publish_heartbeat(server: RedisServer, consumer: str) -> None:
    role = Role.WORKER
    client = redis.asyncio.Redis(
        port=server.port, username=f"fabric-{role.value}", password=PASSWORDS[role]
    )
    try:
        status = WorkerStatus(consumer=consumer, state="running", heartbeat_at=time.time())
        await publish(client, KEYS, status)
    finally:
        await client.aclose()


REFUSED: list[tuple[Role, tuple[str, ...]]] = [
    (Role.PRODUCER, ("XREADGROUP", "GROUP", "workers", "p", "STREAMS", KEYS.jobs(64), ">")),
    (Role.PRODUCER, ("XCLAIM", KEYS.jobs(64), "workers", "p", "0", "0-1")),
    (Role.PRODUCER, ("XRANGE", KEYS.results(64), "-", "+")),
    (Role.PRODUCER, ("XREADGROUP", "GROUP", "results", "p", "STREAMS", KEYS.results(64), ">")),
    (Role.PRODUCER, ("XADD", KEYS.dlq(64), "*", "h", "x")),
    (Role.READER, ("XADD", KEYS.jobs(64), "*", "h", "x", "t", "y")),
    # XREADGROUP counts as a read in Redis 7; this would take jobs from workers.
    (Role.READER, ("XREADGROUP", "GROUP", "workers", "r", "STREAMS", KEYS.jobs(64), ">")),
    (Role.READER, ("XRANGE", KEYS.jobs(64), "-", "+")),
    (Role.READER, ("SET", KEYS.job(64, "e1"), "queued")),
    (Role.READER, ("SCRIPT", "LOAD", "return 1")),
    (Role.WORKER, ("HGETALL", OTHER.config)),
    (Role.WORKER, ("XADD", OTHER.jobs(64), "*", "h", "x", "t", "y")),
    (Role.WORKER, ("XREADGROUP", "GROUP", "workers", "w", "STREAMS", OTHER.jobs(64), ">")),
    (Role.WORKER, ("GET", OTHER.backlog(64))),
    (Role.WORKER, ("HSET", KEYS.config, "lanes", "64")),
    (Role.WORKER, ("XGROUP", "CREATE", KEYS.jobs(64), "mine", "0")),
] + [
    (role, command)
    for role in Role
    for command in [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "*"),
        ("CONFIG", "SET", "appendonly", "no"),
        ("KEYS", "*"),
        ("DEBUG", "SLEEP", "0"),
        ("ACL", "SETUSER", f"fabric-{role.value}", "+@all"),
        ("EVAL", "return 1", "0"),
        ("SELECT", "1"),
    ]
]


@pytest.mark.parametrize(
    ("role", "command"), REFUSED, ids=[f"{r.value}:{' '.join(c)[:40]}" for r, c in REFUSED]
)
def test_each_role_is_refused_what_it_must_not_do(
    acl_server: RedisServer, role: Role, command: tuple[str, ...]
) -> None:
    with role_client(acl_server, role) as client, pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)


def test_scripts_run_with_the_callers_permissions_only(acl_server: RedisServer) -> None:
    with role_client(acl_server, Role.WORKER) as worker:
        flush = worker.script_load("return redis.call('FLUSHALL')")
        with pytest.raises(redis.ResponseError, match="can't run this command"):
            worker.evalsha(flush, 0)
        peek = worker.script_load(f"return redis.call('GET', '{OTHER.config}')")
        with pytest.raises(redis.ResponseError, match="can't access at least one of the keys"):
            worker.evalsha(peek, 0)
    with role_client(acl_server, Role.PRODUCER) as producer:
        read = producer.script_load("return redis.call('XLEN', KEYS[1])")
        with pytest.raises(redis.exceptions.NoPermissionError):
            producer.evalsha(read, 1, KEYS.dlq(64))
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=acl_server.port).ping()  # the default user is off


def test_a_producer_refused_for_memory_names_used_and_maxmemory(acl_server: RedisServer) -> None:
    """Under its ACL user the producer may INFO: its exit 6 says how full Redis is."""
    with admin_client(acl_server) as admin:
        admin.acl_log_reset()
        admin.config_set("maxmemory", "1")
        try:
            refused = fabric(
                role_url(acl_server.port, Role.PRODUCER),
                "submit",
                "--backpressure-timeout-s",
                "0.3",
                "-",
                stdin=jsonl("oom", 2),
            )
        finally:
            admin.config_set("maxmemory", "0")
        assert refused.returncode == 6, refused.stderr
        assert "Redis is out of memory (used " in refused.stderr
        assert "of maxmemory 0.0 MiB" in refused.stderr
        assert [entry["object"] for entry in admin.acl_log()] == []


# --- credentials never shown ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://u:s3cret@h:1/0", "redis://u:***@h:1/0"),
        ("redis://:s3cret@h/0", "redis://:***@h/0"),
        (
            "rediss://u:s3@cret@[::1]:6380/0?ssl_ca_certs=/ca.pem",
            "rediss://u:***@[::1]:6380/0?ssl_ca_certs=/ca.pem",
        ),
        (
            "redis://u@h/0?password=s3cret&ssl_password=s3cret",
            "redis://u@h/0?password=***&ssl_password=***",
        ),
        ("redis://u:s3cret@h:notaport/0", "redis://u:***@h:notaport/0"),
        ("redis://u:s3cret@[::1/0", "<malformed Redis URL>"),
    ],
)
def test_redact_hides_every_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def assert_no_secret(*outputs: str) -> None:
    for output in outputs:
        for secret in SECRETS:
            assert secret not in output, f"{secret!r} leaked in:\n{output}"


def test_no_password_in_any_output(acl_server: RedisServer, tmp_path: Path) -> None:
    port = acl_server.port
    reader = role_url(port, Role.READER)
    outputs = [fabric(role_url(port, Role.PRODUCER), "submit", "-", stdin=jsonl("leak", 5))]
    worker = WorkerProcess(role_url(port, Role.WORKER), NS, tmp_path, "--burst")
    try:
        assert worker.wait(60) == 0, worker.log
    finally:
        worker.stop()
    outputs += [
        fabric(reader, "results"),
        fabric(reader, "inspect"),
        fabric(reader, "inspect", "--json"),
        # redis-py takes any query parameter as a connection option, password too.
        fabric(
            f"{url_for(port)}?username=fabric-reader&password={PASSWORDS[Role.READER]}", "inspect"
        ),
        fabric(url_for(port, ADMIN, ADMIN_PW), "dlq", "list"),
        fabric(
            url_for(port, ADMIN, ADMIN_PW),
            "acl",
            "--password-env",
            "worker=PW",
            env={"PW": ADMIN_PW},
        ),
    ]
    for result in outputs:
        assert result.returncode == 0, result.stderr
    assert "127.0.0.1" in outputs[2].stdout and ":***@" in outputs[2].stdout
    assert "password=***" in outputs[4].stdout
    assert_no_secret(worker.log, *(r.stdout + r.stderr for r in outputs))


def test_no_password_on_error_paths(acl_server: RedisServer, tmp_path: Path) -> None:
    """A wrong password and a server that is not there: each command fails
    with status 1 (a worker that cannot reach Redis: 4) and says why, without
    the password. Run side by side:
    `fabric submit` retries connection errors for 30 s before giving up."""
    wrong = url_for(acl_server.port, "fabric-reader", WRONG_PW)
    nowhere = url_for(free_port(), ADMIN, ADMIN_PW)
    manifest = str(Path(__file__).resolve().parents[3] / "engines/manifests/sim-small.json")
    commands = [
        ("inspect",),
        ("results",),
        ("submit", "-"),
        ("worker", "--manifest", manifest, "--burst"),
        ("dlq", "list"),
        ("acl",),
    ]

    def start(url: str, args: tuple[str, ...]) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "fabric_worker", *args]
        env = fabric_env(url, NS, None)
        pipe = subprocess.PIPE
        return subprocess.Popen(
            command, env=env, stdin=pipe, stdout=pipe, stderr=subprocess.STDOUT, text=True
        )

    runs = [(url, args, start(url, args)) for url in (wrong, nowhere) for args in commands]
    for url, args, process in runs:
        output, _ = process.communicate(jsonl("never", 1).decode(), timeout=90)
        # A worker that never reaches Redis within its outage budget has lost its
        # broker (exit 4), as when it loses Redis later; refused credentials are 1.
        lost = url == nowhere and args[0] == "worker"
        assert process.returncode == (4 if lost else 1), (args, output)
        why = "invalid username-password pair" if url == wrong else "Connection refused"
        assert why in output, (args, output)
        assert_no_secret(output)


def test_refused_credentials_are_named_and_not_retried(acl_server: RedisServer) -> None:
    wrong = url_for(acl_server.port, "fabric-producer", WRONG_PW)
    inspected = fabric(wrong, "inspect")
    assert "Redis refused the credentials" in inspected.stderr
    started = time.monotonic()
    submitted = fabric(wrong, "submit", "-", stdin=jsonl("never", 1))
    assert submitted.returncode == 1 and time.monotonic() - started < 10


# --- TLS ------------------------------------------------------------------------


def make_certs(directory: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the
    openssl CLI. Returns the directory holding ca.pem, server.pem, server.key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed: cannot make test certificates")

    def run(command: str) -> None:  # no argument holds a space
        subprocess.run([openssl, *command.split()], cwd=directory, check=True, capture_output=True)

    run("req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-CA -keyout ca.key -out ca.pem")
    run("req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr")
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
        "-extfile san.cnf -out server.pem"
    )
    return directory


class TlsRedisServer(RedisServer):
    """redis-server with TLS only (the plain port is off) and a password."""

    def __init__(self, directory: Path, certs: Path, password: str) -> None:
        super().__init__(directory)
        self.ca = certs / "ca.pem"
        self.password = password
        options = {
            "port": "0",
            "tls-port": str(self.port),
            "tls-cert-file": str(certs / "server.pem"),
            "tls-key-file": str(certs / "server.key"),
            "tls-ca-cert-file": str(self.ca),
            "tls-auth-clients": "no",
            "requirepass": password,
        }
        self.extra_args += [arg for name, value in options.items() for arg in (f"--{name}", value)]

    @property
    def url(self) -> str:
        base = url_for(self.port, "", self.password, scheme="rediss")
        return f"{base}?ssl_cert_reqs=required&ssl_ca_certs={self.ca}"

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is not None and self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
            try:
                with redis.Redis.from_url(self.url, socket_connect_timeout=0.5) as client:
                    if client.ping():
                        return
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsRedisServer]:
    (tmp_path / "certs").mkdir()
    (tmp_path / "redis").mkdir()
    certs = make_certs(tmp_path / "certs")
    server = TlsRedisServer(tmp_path / "redis", certs, "Tls-pw-41f0aa")
    try:
        server.start()
    except RuntimeError as exc:
        server.close()
        if "tls" in str(exc).lower():
            pytest.skip(f"redis-server was built without TLS support: {exc}")
        raise
    yield server
    server.close()


def test_everything_works_over_tls(tls_server: TlsRedisServer, tmp_path: Path) -> None:
    url = tls_server.url
    assert fabric(url, "init", "--lanes", "64,128", ns="tls").returncode == 0
    submitted = fabric(url, "submit", "-", stdin=jsonl("t", 10), ns="tls")
    assert submitted.stdout == "submitted 10, duplicates 0\n", submitted.stderr
    worker = WorkerProcess(url, "tls", tmp_path, "--burst")
    try:
        assert worker.wait(60) == 0, worker.log
    finally:
        worker.stop()
    results = fabric(url, "results", ns="tls")
    assert sorted(orjson.loads(line)["id"] for line in results.stdout.splitlines()) == sorted(
        f"t{i}" for i in range(10)
    )
    inspected = fabric(url, "inspect", ns="tls")
    assert inspected.returncode == 0
    assert f"rediss://:***@127.0.0.1:{tls_server.port}/0?ssl_cert_reqs" in inspected.stdout
    assert tls_server.password not in inspected.stdout + worker.log + results.stdout


@pytest.mark.parametrize(
    ("scheme", "why"),
    [
        ("rediss", "certificate verify failed"),  # without ssl_ca_certs: the system CAs
        ("redis", "cannot reach Redis"),  # plain text to a TLS port: dropped
    ],
)
def test_tls_is_not_optional(tls_server: TlsRedisServer, scheme: str, why: str) -> None:
    url = url_for(tls_server.port, "", tls_server.password, scheme=scheme)
    result = fabric(url, "inspect", ns="tls")
    assert result.returncode == 1
    assert why in result.stderr and tls_server.password not in result.stderr
