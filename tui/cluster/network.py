"""How good the link between the head and a worker is, measured over the SSH connection the
cluster already uses: round trip and bandwidth, and what a slow link costs llama.cpp's RPC.

RPC is chatty: every generated token waits about one round trip per remote host, and the first
load sends each worker its share of the weights. So a link that is fine for SSH can make a
cluster slower than one box, and the plan says so.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

from llama_wizard.tui.cluster.ssh import SSH_FAILED, RemoteError, SshOptions, ssh_argv

SLOW_RTT_MS = 2.0
SLOW_BYTES_PER_SECOND = 1e9 / 8  # 1 Gbit/s
PINGS = 5
_DONE = b"llama-wizard-link-done"
_RECEIVED = b"llama-wizard-link-received"
# One connection for both measurements, so connection setup is in neither: echo lines until the
# marker (`read` takes the pipe a byte at a time, so nothing after the marker is swallowed),
# then swallow the sample and say when all of it has arrived.
_SCRIPT = (
    f'while IFS= read -r line; do [ "$line" = {_DONE.decode()} ] && break; '
    "printf '%s\\n' \"$line\"; done; "
    f"cat >/dev/null; echo {_RECEIVED.decode()}"
)
_CHUNK = 1 << 16
# The sample measures the link, not ssh: no compression (random data would not shrink, but
# zlib's time would count), and AES-GCM first, which CPUs with AES instructions encrypt several
# times faster than ssh's default ChaCha20 (both kept as fallbacks every OpenSSH server has).
# Even so ssh's own cost is in it: the bandwidth is a lower bound of what RPC's plain TCP gets.
_LINK_OPTIONS = (
    "Compression=no",
    "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr",
)


@dataclass
class LinkMeasure:
    rtt_ms: float  # median round trip of a short line through ssh and back
    bytes_per_second: float | None  # None when no sample was sent

    def to_json(self) -> dict[str, Any]:
        return {"rtt_ms": round(self.rtt_ms, 3), "bytes_per_second": self.bytes_per_second}


def _gbit(bytes_per_second: float) -> str:
    return f"{bytes_per_second * 8 / 1e9:.2g} Gbit/s"


def _size(nbytes: int) -> str:
    return f"{nbytes / (1 << 30):.1f} GiB"


def measure_link(
    destination: str,
    options: SshOptions,
    *,
    timeout: float = 20.0,
    sample_bytes: int = 32 << 20,
) -> LinkMeasure:
    """Round trip (median of a few) and bandwidth (sample_bytes of random data, uncompressed)
    between here and destination, over one ssh connection. RemoteError when ssh fails or the
    whole measurement takes longer than `timeout` seconds."""
    from llama_wizard.detect.process import stop_process_tree

    argv = ssh_argv(destination, ["sh", "-c", _SCRIPT], options, extra=_LINK_OPTIONS)
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            bufsize=0,
        )
    except OSError as error:
        raise RemoteError(
            f"Cannot run ssh to reach {destination}: {error.strerror}.",
            "Install the OpenSSH client (Debian/Ubuntu: `apt install openssh-client`).",
        ) from error
    assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        stop_process_tree(popen, signals=(), group=True, reap_timeout=1.0)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    rtts: list[float] = []
    elapsed: float | None = None
    try:
        # The first line also waits for the connection and the far shell: not a round trip.
        for number in range(PINGS + 1):
            line = f"ping {number}\n".encode()
            started = time.perf_counter()
            popen.stdin.write(line)
            if popen.stdout.readline() != line:
                break
            if number:
                rtts.append((time.perf_counter() - started) * 1000)
        else:
            popen.stdin.write(_DONE + b"\n")
            if sample_bytes > 0:
                sample = os.urandom(sample_bytes)  # random: nothing on the way can compress it
                started = time.perf_counter()
                for offset in range(0, sample_bytes, _CHUNK):
                    popen.stdin.write(sample[offset : offset + _CHUNK])
            popen.stdin.close()
            if popen.stdout.readline().strip() == _RECEIVED and sample_bytes > 0:
                elapsed = time.perf_counter() - started
    except OSError:
        pass  # the far side went away: said below
    finally:
        timer.cancel()
        if popen.stdin and not popen.stdin.closed:
            popen.stdin.close()
    try:
        popen.wait(timeout=5)
    except subprocess.TimeoutExpired:
        stop_process_tree(popen, signals=(), group=True, reap_timeout=1.0)
    stderr = popen.stderr.read().decode("utf-8", errors="replace")
    popen.stdout.close()
    popen.stderr.close()
    if expired.is_set():
        raise RemoteError(
            f"Measuring the link to {destination} took longer than {timeout:g} s.",
            f"Check that `ssh {destination} true` answers promptly; a link this slow is too slow "
            "for llama.cpp's RPC anyway.",
        )
    if len(rtts) < PINGS or (sample_bytes > 0 and elapsed is None):
        said = [line for line in stderr.splitlines() if line.strip()]
        reason = said[-1].strip() if said else f"exit status {popen.returncode}"
        what = "ssh could not reach" if popen.returncode == SSH_FAILED else "Lost the link to"
        raise RemoteError(
            f"{what} {destination} while measuring the link: {reason}",
            f"Check that `ssh {destination} true` works without a password or a question, and "
            "that `sh` and `cat` are there.",
        )
    bandwidth = sample_bytes / elapsed if elapsed else None
    return LinkMeasure(rtt_ms=statistics.median(rtts), bytes_per_second=bandwidth)


def load_seconds(link: LinkMeasure, nbytes: int) -> float | None:
    """How long sending nbytes over the link takes (a worker's share of the weights on the first
    load), or None when its bandwidth is unknown."""
    if not link.bytes_per_second:
        return None
    return nbytes / link.bytes_per_second


def is_slow(link: LinkMeasure) -> bool:
    return link.rtt_ms > SLOW_RTT_MS or (
        link.bytes_per_second is not None and link.bytes_per_second < SLOW_BYTES_PER_SECOND
    )


def slow_link_words(
    link: LinkMeasure, *, host: str | None = None, share_bytes: int | None = None
) -> str | None:
    """A warning for the plan when the link is slow for RPC (round trip over 2 ms, or under
    1 Gbit/s), saying what it costs; None when it is not. `share_bytes`: the worker's share of
    the weights, which the first load sends over it."""
    if not is_slow(link):
        return None
    where = f"The link to {host}" if host else "The link to this worker"
    measured = f"{link.rtt_ms:.1f} ms round trip"
    if link.bytes_per_second is not None:
        measured += f", {_gbit(link.bytes_per_second)} through ssh"
    words = (
        f"{where} is slow for llama.cpp's RPC ({measured}): each generated token waits about "
        f"one round trip ({link.rtt_ms:.1f} ms) per remote host"
    )
    seconds = None if share_bytes is None else load_seconds(link, share_bytes)
    if share_bytes is not None and seconds is not None:
        words += (
            f", and the first load sends its share of the weights ({_size(share_bytes)}) over "
            f"it, about {seconds:.0f} s (rpc-server -c keeps them cached there for later loads)"
        )
    return words + ". Hosts on the same switch, on 10 Gbit/s or faster, avoid this."
