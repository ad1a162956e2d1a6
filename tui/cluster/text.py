"""The cluster plan as plain lines: what `cluster plan`, plain mode and the wizard's cluster
view show (one wording, written once)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from llama_wizard.tui.cluster.plan import ClusterPlan, HostPlan
from llama_wizard.tui.format import plain_text

if TYPE_CHECKING:
    from llama_wizard.tui.cluster.builds import HostBuild
    from llama_wizard.tui.cluster.runtime import ClusterStatus

GIB = 1 << 30


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def host_lines(host: HostPlan) -> list[str]:
    role = "head (llama-server)" if host.role == "head" else "worker (rpc-server)"
    simulated = host.spec.simulated or bool(host.inventory and host.inventory.simulated)
    title = f"{host.name}: {role}" + (" [simulated]" if simulated else "")
    if not host.usable:
        lines = [plain_text(f"{title}: LEFT OUT: {host.error}")]
        return lines + ([plain_text(f"  {host.fix}")] if host.fix else [])
    lines = [title]
    if host.detected_by:
        lines.append(f"  detected: {host.detected_by}")
    if host.build is not None:
        lines.append(f"  build: {host.build.build_label}  ({shlex.join(host.build.build_argv)})")
    for device in host.devices:
        used = int(device["total_bytes"])
        lines.append(
            f"  {device['name']}: {device['layers']} layers, {_gib(used)} of "
            f"{_gib(int(device['memory_bytes']))}"
        )
    if host.env:
        lines.append("  env: " + " ".join(f"{k}={shlex.quote(v)}" for k, v in host.env.items()))
    if host.rpc_argv:
        lines.append(f"  rpc-server: {shlex.join(host.rpc_argv)}")
    if host.link is not None:
        rate = host.link.bytes_per_second
        speed = f", {rate * 8 / 1e9:.2f} Gbit/s" if rate else ""
        lines.append(f"  link: {host.link.rtt_ms:.2f} ms round trip{speed}")
    return lines


def plan_lines(plan: ClusterPlan) -> list[str]:
    lines: list[str] = []
    usable = [h for h in plan.hosts if h.usable]
    left_out = len(plan.hosts) - len(usable)
    lines.append(
        f"Cluster of {len(usable)} host{'s' if len(usable) != 1 else ''}"
        + (f" ({left_out} left out)" if left_out else "")
        + f"; head: {plan.head.name}; flake: {plan.flake}"
    )
    if plan.simulated:
        lines.append("SIMULATED: some hosts are bundled profiles, not machines; plan only.")
    for host in plan.hosts:
        lines += ["", *host_lines(host)]
    lines.append("")
    model = plan.model
    if model is None:
        lines.append("Model: none fits.")
    else:
        lines.append(
            f"Model: {model.name} {model.quant}, {model.ctx} tokens: {model.verdict} "
            f"({_gib(model.total_bytes)} of {_gib(model.memory_bytes)} across all devices)"
        )
        if plan.tensor_split:
            lines.append(f"Split (-ts): {','.join(str(t) for t in plan.tensor_split)}")
    if plan.launch_argv:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.launch_env.items())
        lines.append("Head: " + (f"{env} " if env else "") + shlex.join(plan.launch_argv))
    if plan.warnings:
        lines.append("")
        lines += [plain_text(f"! {w}") for w in plan.warnings]
    return lines


def status_lines(status: ClusterStatus) -> list[str]:
    """`cluster status`: each process, whether it runs and answers, and its last log lines."""
    if not status.hosts:
        return [plain_text(status.note or "No cluster is up.")]
    lines = [
        f"Cluster {'UP' if status.up else 'NOT UP'}"
        + (f": {status.url}" if status.url else "")
        + (f" (started {status.started})" if status.started else "")
    ]
    for host in status.hosts:
        running = {True: "running", False: "NOT running", None: "cannot be asked"}[host.alive]
        answer = ""
        if host.role == "head":
            answer = f", /health {status.health}" if status.health is not None else ", no answer"
        elif host.accepting is not None:
            answer = ", accepts connections" if host.accepting else ", does NOT accept connections"
        where = f" on {host.endpoint}" if host.endpoint else ""
        lines.append(f"{host.host} ({host.role}){where}: {running} (pid {host.pid}){answer}")
        if not (host.alive and (host.accepting is not False)):
            lines += [f"    {line}" for line in host.log_tail]
            lines.append(f"    log: {host.log}")
    lines += [plain_text(f"! {warning}") for warning in status.warnings]
    if status.note:
        lines.append(plain_text(status.note))
    return lines


def build_lines(result: HostBuild) -> list[str]:
    """One host's build as `cluster build` ends it."""
    if result.ok:
        return [f"{result.host}: built {result.store_path} in {result.elapsed:.0f} s"]
    lines = [plain_text(f"{result.host}: build FAILED: {result.error}")]
    lines += [f"    {line}" for line in result.log_tail]
    if result.log_path:
        lines.append(f"    full log: {result.log_path}")
    if result.fix:
        lines.append(plain_text(f"    {result.fix}"))
    return lines
