"""How long `fit` takes for every catalogue model and quant (no network): it should be instant.

    python -m bench.fit_catalogue

(run as a module: `python bench/fit_catalogue.py` would put bench/ first on sys.path, where
bench/detect.py hides the detect package.)
"""

from __future__ import annotations

import time

from llama_wizard.models.catalogue import load_catalogue
from llama_wizard.models.choose import fit_model
from llama_wizard.models.estimate import Device
from llama_wizard.models.source import from_catalogue


def main() -> None:
    start = time.perf_counter()
    catalogue = load_catalogue()
    count = 0
    for model in catalogue.models:
        source = from_catalogue(model, model.repo, None)
        fit_model(source, [Device("MI50 32GB", 34342961152)], None)
        count += len(source.candidates)
    elapsed = time.perf_counter() - start
    print(f"{count} quants of {len(catalogue.models)} models in {elapsed * 1000:.0f} ms")


if __name__ == "__main__":
    main()
