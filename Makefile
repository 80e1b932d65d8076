# MetaSentry: `make run` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TOKEN  := var/api-token

.PHONY: run test bench art-env drift-env lint typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

# A random API token, created once and readable only by its owner; export
# METASENTRY_API_TOKEN yourself to use your own.
$(TOKEN):
	mkdir -p var
	umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(32))" > $(TOKEN)

run: $(STAMP) $(TOKEN)
	METASENTRY_API_TOKEN="$${METASENTRY_API_TOKEN:-$$(cat $(TOKEN))}" \
		$(BIN)/metasentry run --config agent.yaml

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) art-env drift-env
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.soak
	nice -n 10 $(BIN)/python -m bench.fewshot
	nice -n 10 $(BIN)/python -m bench.adaptation
	nice -n 10 $(BIN)/python -m bench.adversarial
	nice -n 10 $(BIN)/python -m bench.adversarial_tabular
	nice -n 10 $(BIN)/python -m bench.poisoning
	nice -n 10 $(BIN)/python -m bench.drift

# IBM ART in its own venv (.venv-art), for the side-by-side benchmarks only: never a
# dependency of the agent.
art-env: $(STAMP)
	bench/art_env.sh

# alibi-detect (PyTorch backend) and river in their own venv (.venv-drift), for the drift
# benchmark's peers only: alibi-detect pins numpy<2, and neither is a dependency of the agent.
drift-env: $(STAMP)
	bench/drift_env.sh

lint: $(STAMP)
	$(BIN)/ruff check agent adapters detectors meta storage bench tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .venv-art .venv-drift var .pytest_cache .ruff_cache .mypy_cache .tools
