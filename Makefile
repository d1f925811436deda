# The two set-up commands (see README.md). Each makes its own virtual
# environment from pyproject.toml on first use; nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test bench
.DEFAULT_GOAL := demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import protocols, p2pnode, sim, libp2p, wasmtime"
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(PY) -m p2pnode demo

test: $(STAMP)
	scripts/setup_js_unixfs.sh
	scripts/setup_js_ipfs.sh
	sh scripts/setup_docker.sh
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench_node.py
