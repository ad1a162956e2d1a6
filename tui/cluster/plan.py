"""The cluster plan: every host's inventory, the RPC-enabled build for its GPUs, the rpc-server
each worker runs, one memory fit across all devices of all hosts in the order llama.cpp uses
them, and the head's llama-server command with `--rpc` and `-ts`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from llama_wizard.detect.errors import ActionableError
from llama_wizard.tui.cluster.hosts import HostSpec

if TYPE_CHECKING:
    from llama_wizard.detect.model import Inventory
    from llama_wizard.models.choose import ModelChoice
    from llama_wizard.models.estimate import Device
    from llama_wizard.nix.recommend import BuildChoice
    from llama_wizard.tui.cluster.network import LinkMeasure
    from llama_wizard.tui.cluster.ssh import SshOptions

DEFAULT_RPC_PORT = 50052
# The worker's program: `ggml-rpc-server` in llama.cpp since upstream renamed it (tools/rpc),
# `rpc-server` before; the runtime takes whichever the build has.
RPC_PROGRAMS = ("ggml-rpc-server", "rpc-server")


@dataclass
class HostPlan:
    """One host of the cluster: the head (llama-server, its own GPUs directly) or a worker
    (rpc-server exposing its GPUs, or its CPU, to the head)."""

    spec: HostSpec
    name: str  # unique among the hosts (a profile simulated twice gets `#2`)
    role: str  # "head" or "worker"
    inventory: Inventory | None = None
    detected_by: str | None = None  # "this machine", "simulated", "llama-wizard over SSH", ...
    build: BuildChoice | None = None  # with useRpc = true
    # Where the build's result is on that host (a path relative to its home over SSH).
    out_link: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    unset_env: list[str] = field(default_factory=list)
    address: str | None = None  # workers: the address the head reaches it by (rpc-server -H)
    port: int | None = None  # workers: rpc-server -p
    rpc_argv: list[str] | None = None  # workers: the rpc-server command
    devices: list[dict[str, Any]] = field(default_factory=list)  # DevicePlan.to_json + host
    link: LinkMeasure | None = None  # head <-> worker, measured over SSH
    error: str | None = None  # set when the host is left out
    fix: str | None = None

    @property
    def usable(self) -> bool:
        return self.error is None and self.inventory is not None

    @property
    def endpoint(self) -> str | None:
        """`ADDRESS:PORT` as `--rpc` takes it (IPv6 in brackets)."""
        if self.address is None or self.port is None:
            return None
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{address}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.name,
            "given": self.spec.text,
            "kind": self.spec.kind,
            "role": self.role,
            "simulated": self.spec.simulated
            or bool(self.inventory is not None and self.inventory.simulated),
            "detected_by": self.detected_by,
            "inventory": None if self.inventory is None else self.inventory.to_json(),
            "output": None if self.build is None else self.build.build_label,
            "build_argv": None if self.build is None else self.build.build_argv,
            "out_link": self.out_link,
            "env": self.env,
            "unset_env": self.unset_env,
            "address": self.address,
            "port": self.port,
            "rpc_command": self.rpc_argv,
            "devices": self.devices,
            "link": None if self.link is None else self.link.to_json(),
            "error": self.error,
            "fix": self.fix,
        }


@dataclass
class ClusterPlan:
    hosts: list[HostPlan]  # every host given, in order; those left out carry `error`
    head: HostPlan
    flake: str
    model: ModelChoice | None = None
    tensor_split: list[int] | None = None
    launch_argv: list[str] = field(default_factory=list)  # llama-server on the head
    launch_env: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def workers(self) -> list[HostPlan]:
        return [h for h in self.hosts if h.role == "worker" and h.usable]

    @property
    def simulated(self) -> bool:
        return any(h.spec.simulated for h in self.hosts if h.usable)

    def to_json(self) -> dict[str, Any]:
        return {
            "hosts": [h.to_json() for h in self.hosts],
            "head": self.head.name,
            "flake": self.flake,
            "model": None if self.model is None else self.model.to_json(),
            "tensor_split": self.tensor_split,
            "rpc": [w.endpoint for w in self.workers],
            "launch_argv": self.launch_argv,
            "launch_env": self.launch_env,
            "warnings": self.warnings,
        }


# --- making the plan ----------------------------------------------------------------------------

# Simulated hosts have no network: their workers get addresses from this private range, said to
# be simulated wherever they show (give the real ones with --address HOST=ADDRESS).
SIMULATED_NETWORK = "10.99.0."
# Where a host over SSH keeps the cluster's build results (relative to its home directory).
REMOTE_BUILDS = ".local/state/llama-wizard/builds"
HEAD_PORT = 8080


@dataclass(frozen=True)
class ClusterRequest:
    """What the person asked for: the hosts (the first is the head) and the model, as `plan`
    takes them, and how to reach and bind the hosts."""

    hosts: list[HostSpec]
    flake: str | None = None
    model: str | None = None
    quant: str | None = None
    ctx: int | None = None
    rpc_port: int = DEFAULT_RPC_PORT
    addresses: dict[str, str] = field(default_factory=dict)  # host -> address (--address)
    allow_public: bool = False
    host: str = "127.0.0.1"  # llama-server --host on the head
    port: int = HEAD_PORT
    measure: bool = True  # the links to SSH hosts, briefly
    timeout: float = 20.0  # per host: detection over SSH, and the link measure
    flash_attn: str | None = None
    n_parallel: int | None = None
    memory: str = "auto"  # each GPU's total or free memory (detect/memory.py)
    root: str | None = None  # `local` as a fixture root or simulated profile (--root/--simulate)
    simulate: str | None = None


class ClusterError(ActionableError):
    """The cluster cannot be planned, started, found or stopped as asked."""


def make_cluster_plan(request: ClusterRequest, ssh: SshOptions | None = None) -> ClusterPlan:
    """Detect every host (in parallel; a host that fails is left out with why), choose each
    one's RPC-enabled build, fit the model across all their devices in llama.cpp's order, and
    write the commands. Raises ClusterError when the head itself cannot be used."""
    from llama_wizard.tui.cluster.ssh import SshOptions

    ssh = ssh or SshOptions(connect_timeout=min(request.timeout, 10.0))
    hosts = _named_hosts(request.hosts)
    _detect_all(hosts, request, ssh)
    head = hosts[0]
    if not head.usable:
        raise ClusterError(
            f"The head, {head.name}, cannot be used: {head.error}",
            head.fix or "Fix that, or put another host first (the first host is the head).",
        )
    warnings: list[str] = []
    flake = _choose_builds(hosts, request, warnings)
    _assign_addresses(hosts, request, ssh, warnings)
    plan = ClusterPlan(hosts=hosts, head=head, flake=flake, warnings=warnings)
    _fit(plan, request)
    _head_command(plan, request)
    _measure_links(plan, request, ssh)
    _security_words(plan)
    return plan


def _named_hosts(specs: list[HostSpec]) -> list[HostPlan]:
    counts: dict[str, int] = {}
    hosts = []
    for number, spec in enumerate(specs):
        counts[spec.text] = counts.get(spec.text, 0) + 1
        name = spec.text if counts[spec.text] == 1 else f"{spec.text}#{counts[spec.text]}"
        hosts.append(HostPlan(spec=spec, name=name, role="head" if number == 0 else "worker"))
    return hosts


def _detect_all(hosts: list[HostPlan], request: ClusterRequest, ssh: SshOptions) -> None:
    """Every host's inventory, at the same time (each SSH host within request.timeout)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(len(hosts), 1)) as pool:
        list(pool.map(lambda host: _detect(host, request, ssh), hosts))


def _detect(host: HostPlan, request: ClusterRequest, ssh: SshOptions) -> None:
    from llama_wizard.tui.machine import open_machine

    spec = host.spec
    try:
        if spec.kind == "ssh":
            from llama_wizard.tui.cluster.ssh import remote_inventory

            found = remote_inventory(str(spec.destination), ssh, timeout=request.timeout)
            host.inventory = found.inventory
            host.detected_by = (
                "llama-wizard over SSH" if found.method == "llama-wizard" else "probe over SSH"
            )
            if found.inventory.simulated:
                host.detected_by += f" (the far side simulates {found.inventory.simulated})"
            return
        root, simulate = (
            (request.root, request.simulate) if spec.kind == "local" else (None, spec.profile)
        )
        with open_machine(root, simulate) as machine:
            host.inventory = machine.detect(min(request.timeout, 10.0))
        host.detected_by = "simulated" if host.inventory.simulated else "this machine"
    except ActionableError as error:
        host.error, host.fix = error.message, error.fix
    except Exception as error:  # a host must never take the others down with it
        host.error = f"detection failed: {type(error).__name__}: {error}"
        host.fix = "Run `llama-wizard detect` on that host to see why."


def _choose_builds(hosts: list[HostPlan], request: ClusterRequest, warnings: list[str]) -> str:
    """Each usable host's build, for its own GPUs and system, with the RPC backend in it. The
    flake's outputs are asked once per system (here, with this machine's Nix)."""
    from llama_wizard.nix import environment
    from llama_wizard.nix.errors import FlakeError, NixNotFound
    from llama_wizard.nix.flake import default_flake_ref, normalize_ref, query_outputs
    from llama_wizard.nix.recommend import nix_system, recommend, with_rpc
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.plan import assumed_outputs, state_dir

    ref = normalize_ref(request.flake) if request.flake else default_flake_ref()
    with open_machine(request.root, None) as here:
        try:
            nix_env = environment.probe(here.root, env=here.env)
        except NixNotFound as error:
            nix_env = None
            warnings.append(f"{error.message} The flake's outputs are assumed, not asked.")
        outputs_by_system: dict[str, Any] = {}
        for host in hosts:
            if not host.usable:
                continue
            assert host.inventory is not None
            system = nix_system(host.inventory)
            if system not in outputs_by_system:
                outputs = None
                if nix_env is not None:
                    try:
                        outputs = query_outputs(ref, system, nix_env, env=here.env)
                    except FlakeError as error:
                        if request.flake:
                            raise
                        warnings.append(f"{error.message} The flake's outputs are assumed.")
                outputs_by_system[system] = outputs or assumed_outputs(ref, system)
            outputs = outputs_by_system[system]
            try:
                build = recommend(host.inventory, outputs, nix_env, state_dir())
                build = with_rpc(build, outputs, nix_env, state_dir())
            except ActionableError as error:
                host.error, host.fix = error.message, error.fix
                continue
            host.build = build
            host.env, host.unset_env = dict(build.env), list(build.unset_env)
            if host.spec.kind == "local":
                host.out_link = build.out_link
            else:
                # On that host: its own home, whatever this machine's state directory is.
                host.out_link = f"{REMOTE_BUILDS}/result-{build.build_name}"
                host.build = replace(
                    build,
                    out_link=host.out_link,
                    build_argv=_with_out_link(build.build_argv, host.out_link),
                )
    if ref.startswith(("/", "path:", "./", "~")) and any(
        h.spec.kind == "ssh" and h.usable for h in hosts
    ):
        warnings.append(
            f"The flake is a path on this machine ({ref}): every host over SSH must have it at "
            "the same path, or give --flake a reference they all reach (github:...)."
        )
    return ref


def _with_out_link(argv: list[str], out_link: str) -> list[str]:
    changed = list(argv)
    if "--out-link" in changed:
        changed[changed.index("--out-link") + 1] = out_link
    return changed


def _assign_addresses(
    hosts: list[HostPlan], request: ClusterRequest, ssh: SshOptions, warnings: list[str]
) -> None:
    """The address the head reaches each worker by (what rpc-server binds to, -H) and its port
    (-p): one port per address, counting up from request.rpc_port."""
    from llama_wizard.tui.cluster.ssh import is_private_address, local_address_towards

    head = hosts[0]
    taken: dict[str, int] = {}
    simulated = 0
    head_address = None
    if head.spec.kind == "ssh" and head.usable:
        head_address = _address_of(head, request, ssh)
    for host in hosts[1:]:
        if not host.usable:
            continue
        given = request.addresses.get(host.name) or request.addresses.get(host.spec.text)
        if given:
            address = given
        elif host.spec.kind == "sim":
            simulated += 1
            address = f"{SIMULATED_NETWORK}{simulated}"
        elif host.spec.kind == "ssh":
            address = _address_of(host, request, ssh)
            if address is None:
                continue
        elif head_address is None:  # this machine, and the head is this machine too
            address = "127.0.0.1"
        else:
            address = local_address_towards(head_address)
        if not (request.allow_public or is_private_address(address)):
            host.error = (
                f"{address} is a public address: llama.cpp's RPC has no authentication, so "
                "anyone who reaches it could use this host's GPUs and read what is sent."
            )
            host.fix = (
                f"Give a private address the head reaches it by: --address {host.name}=10.x.x.x "
                "(a private network, or a VPN such as WireGuard or Tailscale); only if that "
                "network is yours alone, --allow-public-rpc."
            )
            continue
        port = taken.get(address, request.rpc_port - 1) + 1
        taken[address] = port
        host.address, host.port = address, port
        program = f"{host.out_link}/bin/{RPC_PROGRAMS[0]}"
        host.rpc_argv = [program, "-H", address, "-p", str(port), "-c"]
    if simulated:
        warnings.append(
            f"Simulated hosts get made-up addresses ({SIMULATED_NETWORK}N); give the real ones "
            "with --address HOST=ADDRESS."
        )


def _address_of(host: HostPlan, request: ClusterRequest, ssh: SshOptions) -> str | None:
    from llama_wizard.tui.cluster.ssh import resolve_address

    given = request.addresses.get(host.name) or request.addresses.get(host.spec.text)
    if given:
        return given
    try:
        return resolve_address(str(host.spec.destination), ssh)
    except ActionableError as error:
        host.error, host.fix = error.message, error.fix
        return None


def cluster_devices(plan: ClusterPlan, memory: str = "auto") -> list[tuple[HostPlan, Device]]:
    """Every device the head's llama-server uses, in llama.cpp's order: the RPC servers' first,
    in `--rpc` order, each with its GPUs (or its CPU when it has none), then the head's own GPUs
    (src/llama.cpp: "add RPC servers at the front of the list to minimize network transfers").
    The output layer goes on the last one: the head's."""
    from llama_wizard.models.choose import devices_from_gpus
    from llama_wizard.models.estimate import Device, host_margin

    ordered: list[tuple[HostPlan, Device]] = []
    for host in [*plan.workers, plan.head]:
        assert host.inventory is not None and host.build is not None
        gpus = [g for g in host.inventory.gpus if g.index in host.build.gpus]
        devices = [
            replace(d, name=f"{host.name}: {d.name}") for d in devices_from_gpus(gpus, memory)
        ]
        if not devices and host is not plan.head:
            # rpc-server with no GPU serves its CPU: llama.cpp treats it as one more device.
            available = host.inventory.memory_available_bytes
            usable = available - host_margin(available) if available else 0
            if usable > 0:
                devices = [Device(f"{host.name}: CPU (RAM over RPC)", usable)]
        ordered += [(host, d) for d in devices]
    return ordered


def _fit(plan: ClusterPlan, request: ClusterRequest) -> None:
    from llama_wizard.models.choose import LaunchSettings, plan_model

    pairs = cluster_devices(plan, request.memory)
    if not pairs:
        plan.warnings.append(
            "There is no device to put the model on: the head has no GPU and no worker was "
            "planned. Add a server to run the layers."
        )
        return
    backends = {h.build.backend for h, _ in pairs if h.build is not None}
    head = plan.head
    assert head.inventory is not None
    settings = LaunchSettings(
        request.flash_attn or "auto",
        request.n_parallel,
        backends.pop() if len(backends) == 1 else None,
        # Every layer on the devices: a cluster is for a model the GPUs hold together, and
        # layers left in the head's RAM would run at RAM speed while the GPUs wait.
        "gpu",
    )
    chosen = plan_model(
        [d for _, d in pairs],
        model=request.model,
        quant=request.quant,
        ctx=request.ctx,
        host_memory_bytes=head.inventory.memory_available_bytes or None,
        settings=settings,
    ).choice
    plan.model = chosen
    if chosen is None:
        plan.warnings.append(
            "No model of the catalogue fits all these devices together"
            + (f" (asked for {request.model})" if request.model else "")
            + ". Add a host, or choose a smaller quant or context."
        )
        return
    plan.tensor_split = chosen.tensor_split
    estimate = (
        chosen.report.quants[chosen.index]
        if chosen.report is not None and chosen.index is not None
        else None
    )
    if estimate is not None:
        for (host, _), device in zip(pairs, estimate.devices, strict=True):
            host.devices.append(device.to_json())
    if chosen.verdict == "no":
        plan.warnings.append(
            f"{chosen.name} {chosen.quant} at {chosen.ctx} tokens needs "
            f"{chosen.total_bytes / (1 << 30):.1f} GiB of the {chosen.memory_bytes / (1 << 30):.1f}"
            " GiB of all hosts together: it does NOT fit. Add a host, or choose a smaller quant "
            "or context."
        )
    elif chosen.verdict == "tight":
        plan.warnings.append(
            f"{chosen.name} {chosen.quant} fits, but tightly: little memory is left on some "
            "device. A smaller context leaves room."
        )


def _head_command(plan: ClusterPlan, request: ClusterRequest) -> None:
    """llama-server on the head: the model with its placement and `-ts` across every device,
    `--rpc` with each worker's endpoint, and where it listens."""
    head = plan.head
    if head.build is None or plan.model is None:
        return
    from llama_wizard.tui.launch import build_environment

    model = plan.model
    args = model.launch_args()
    if model.source_args()[:1] == ["-hf"]:
        from llama_wizard.models.download import cached_model_path

        if head.spec.kind == "local" and (path := cached_model_path(model)):
            args = ["-m", path, *args[2:]]
    endpoints = [w.endpoint for w in plan.workers if w.endpoint]
    program = f"{head.out_link}/bin/llama-server"
    rpc = ["--rpc", ",".join(endpoints)] if endpoints else []
    listen = ["--host", request.host, "--port", str(request.port)]
    plan.launch_argv = [program, *rpc, *args, *listen, *model.server_args()]
    plan.launch_env = build_environment({}, head.env, ())


def _measure_links(plan: ClusterPlan, request: ClusterRequest, ssh: SshOptions) -> None:
    """Round trip and bandwidth to each worker over SSH (from this machine: the head's links
    when the head is this machine), and what a slow link costs."""
    from llama_wizard.tui.cluster.network import measure_link, slow_link_words

    for worker in plan.workers:
        if worker.spec.kind != "ssh" or not request.measure:
            continue
        try:
            worker.link = measure_link(str(worker.spec.destination), ssh, timeout=request.timeout)
        except ActionableError as error:
            plan.warnings.append(
                f"The link to {worker.name} could not be measured: {error.message}"
            )
            continue
        on_worker = sum(int(d.get("weights_bytes", 0)) for d in worker.devices)
        words = slow_link_words(worker.link, host=worker.name, share_bytes=on_worker or None)
        if words:
            plan.warnings.append(words)
    if plan.head.spec.kind == "ssh" and request.measure and plan.workers:
        plan.warnings.append(
            "The links were measured from this machine, not from the head "
            f"({plan.head.name}): run the plan there for the head's own figures."
        )


def _security_words(plan: ClusterPlan) -> None:
    if plan.workers:
        bound = ", ".join(f"{w.name} on {w.endpoint}" for w in plan.workers)
        plan.warnings.append(
            "llama.cpp's RPC has no authentication and no encryption: each rpc-server is bound "
            f"to one private address, never 0.0.0.0 ({bound}). Keep those ports to the cluster's "
            "own network (a firewall, or a VPN)."
        )


# Addresses that mean "every interface": never a worker's bind address.
PUBLIC_BINDS = ("0.0.0.0", "::", "[::]", "*", "")


def start_refusal(plan: ClusterPlan) -> ClusterError | None:
    """Why this plan cannot be started (`cluster up`, the wizard's Start), or None: the one
    rule every face asks."""
    nothing_planned = plan.model is None and not plan.launch_argv
    if plan.head.usable and nothing_planned and not cluster_devices(plan):
        return ClusterError(
            f"There is no device to put a model on: {plan.head.name} has no GPU and no worker "
            "was planned.",
            "Add a server to run the layers (an SSH destination after the head), or run on "
            "this machine alone with `llama-wizard run`.",
        )
    simulated = [
        h.name
        for h in plan.hosts
        if h.usable
        and (h.spec.simulated or (h.spec.kind == "local" and h.inventory and h.inventory.simulated))
    ]
    if simulated:
        return ClusterError(
            f"Simulated hosts can be planned, not started: {', '.join(simulated)}.",
            "Give real servers (`local`, without --simulate, and SSH destinations) to start; "
            "keep sim:PROFILE hosts for `cluster plan`.",
        )
    if not plan.head.usable:
        return ClusterError(
            f"The head, {plan.head.name}, cannot be used: {plan.head.error or 'not detected'}",
            plan.head.fix or "Make it reachable, or name another host first.",
        )
    model = plan.model
    if (model is None and not plan.launch_argv) or (model is not None and model.verdict == "no"):
        said = (
            "no model fits"
            if model is None
            else f"{model.name} {model.quant} at {model.ctx} tokens needs "
            f"{model.total_bytes / (1 << 30):.1f} GiB of {model.memory_bytes / (1 << 30):.1f} GiB"
        )
        return ClusterError(
            f"The model does not fit these hosts together ({said}); nothing was started.",
            "Add a server, or choose a smaller quant or context.",
        )
    if not plan.launch_argv:
        return ClusterError(
            "The plan has no llama-server command for the head.",
            "Plan again with a model (`--model`), so the head knows what to serve.",
        )
    for worker in plan.workers:
        if not worker.rpc_argv or worker.endpoint is None:
            return ClusterError(
                f"The plan has no rpc-server command for {worker.name}.",
                "Plan again: every worker needs an address the head reaches it by.",
            )
        bind = worker.rpc_argv[worker.rpc_argv.index("-H") + 1] if "-H" in worker.rpc_argv else ""
        if worker.address in PUBLIC_BINDS or bind in PUBLIC_BINDS:
            return ClusterError(
                f"The rpc-server on {worker.name} would listen on every interface "
                f"({bind or worker.address}). RPC is unauthenticated: anyone reaching the port "
                "could use that server.",
                "Bind it to the private address the head reaches it by (--address "
                f"{worker.name}=10.x.x.x, or 127.0.0.1 on one box).",
            )
    return None
