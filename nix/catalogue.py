"""What the documented llama.cpp flake offers (shared/reference/flake.md, "Flake Outputs"), and
what upstream llama.cpp's flake offers (gpu-detection.md §9). The wizard asks the real flake
which of these it has; this catalogue explains each one to a person."""

from __future__ import annotations

from dataclasses import dataclass

# The targets nixpkgs' rocmPackages builds (clr.gpuTargets plus rocsolver's gfx900;
# gpu-detection.md §9): what a `rocm.override { rocmGpuTargets = ...; }` can compile for.
ROCM_BUILDABLE_TARGETS = (
    "gfx900", "gfx906", "gfx908", "gfx90a", "gfx942", "gfx1010", "gfx1030", "gfx1100",
    "gfx1101", "gfx1102", "gfx1151", "gfx1200", "gfx1201",
)  # fmt: skip

# The per-gfx outputs of the documented flake and the cards each one is for.
ROCM_GFX_OUTPUTS: dict[str, str] = {
    "gfx906": "MI50, MI60",
    "gfx908": "MI100",
    "gfx90a": "MI210, MI250, MI250X",
    "gfx942": "MI300A, MI300X, MI325X",
    "gfx1030": "Radeon PRO W6800, Radeon PRO V620",
    "gfx1100": "Radeon RX 7900 XTX, Radeon RX 7900 XT",
    "gfx1101": "Radeon RX 7800 XT, Radeon RX 7700 XT, Radeon PRO W7700",
    "gfx1200": "Radeon RX 9060 XT",
    "gfx1201": "Radeon RX 9070 XT, Radeon RX 9070",
}


@dataclass(frozen=True)
class FlakeOutput:
    name: str
    kind: str  # package, app, devShell, nixosModule, overlay
    backend: str  # cpu, rocm, cuda, vulkan, mpi, windows, python, docker, -
    description: str
    gfx_target: str | None = None
    default_choice: bool = True  # mpi-*, windows, python-scripts, docker-* never are


def _packages() -> list[FlakeOutput]:
    outputs = [
        FlakeOutput("default", "package", "cpu", "CPU build with BLAS (Metal on macOS)"),
        FlakeOutput("rocm", "package", "rocm", "AMD ROCm/HIP build for every GPU architecture"),
        FlakeOutput("cuda", "package", "cuda", "NVIDIA CUDA build (Linux)"),
        FlakeOutput("vulkan", "package", "vulkan", "Vulkan build (any vendor)"),
        FlakeOutput("mpi-cpu", "package", "mpi", "CPU build with MPI for distributed inference",
                    default_choice=False),
        FlakeOutput("mpi-cuda", "package", "mpi", "CUDA build with MPI for distributed inference",
                    default_choice=False),
        FlakeOutput("windows", "package", "windows", "Cross-compiled Windows build",
                    default_choice=False),
        FlakeOutput("python-scripts", "package", "python", "Python conversion utilities",
                    default_choice=False),
        FlakeOutput("docker-rocm", "package", "docker", "Docker image, every ROCm architecture",
                    default_choice=False),
    ]  # fmt: skip
    for gfx, cards in ROCM_GFX_OUTPUTS.items():
        outputs.append(
            FlakeOutput(f"rocm-{gfx}", "package", "rocm", f"ROCm build for {cards}", gfx)
        )
        outputs.append(
            FlakeOutput(f"docker-rocm-{gfx}", "package", "docker", f"Docker image for {cards}",
                        gfx, default_choice=False)
        )  # fmt: skip
    return outputs


CATALOGUE: tuple[FlakeOutput, ...] = (
    *_packages(),
    FlakeOutput("llama-cli", "app", "-", "nix run .#llama-cli"),
    FlakeOutput("llama-server", "app", "-", "nix run .#llama-server"),
    FlakeOutput("llama-quantize", "app", "-", "nix run .#llama-quantize"),
    FlakeOutput("llama-embedding", "app", "-", "nix run .#llama-embedding"),
    *(
        FlakeOutput(f"{shell}{extra}", "devShell", shell, f"nix develop .#{shell}{extra}")
        for shell in ("default", "rocm", "cuda")
        for extra in ("", "-extra")
    ),
    FlakeOutput("default", "nixosModule", "-", "services.llama-server systemd service"),
    FlakeOutput("default", "overlay", "-", "adds llama-cpp to your nixpkgs"),
)

UPSTREAM_PACKAGES = (
    "default", "vulkan", "windows", "python-scripts", "cuda", "mpi-cpu", "mpi-cuda", "rocm",
)  # fmt: skip


def describe(name: str) -> FlakeOutput | None:
    return next((o for o in CATALOGUE if o.kind == "package" and o.name == name), None)
