# The project's two entry points: `make run` (the default sweep) and `make test`.
# Both create .venv from the pinned requirements first if it is missing or stale, and
# install the package lorasweep into it in editable mode (its code stays in this checkout).

PYTHON ?= python3
VENV := .venv
CORES ?= all
STAMP := $(VENV)/.installed-requirements

.PHONY: run test status dry-run lint clean-results

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $(STAMP)

# the report goes into the archive, so it is written before the archive rule runs
run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) --omit-from archive
	$(VENV)/bin/snakemake --cores $(CORES) --report results/report.html
	$(VENV)/bin/snakemake --cores $(CORES)

test: $(STAMP)
	$(VENV)/bin/python -m pytest tests

# where a running sweep stands (reads results/ only; needs no install step, so it never
# touches the venv of a run in progress); CONFIGFILE=... names the config file of the run
status:
	$(VENV)/bin/python -m lorasweep status $(if $(CONFIGFILE),--configfile $(CONFIGFILE))

dry-run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) --dry-run

# snakemake --lint, failing only on lints not accepted in the README's lint notes
lint: $(STAMP)
	$(VENV)/bin/python scripts/check_lint.py

clean-results:
	rm -rf results .snakemake
