"""A transfer study as one resumable grid of ordinary runs (``ssl-rad experiment CONFIG``).

``spec`` reads the experiment YAML, ``cells`` expands it into command lines with output folders and states,
``runner`` executes the pending ones (a failed cell is recorded, the rest continue), ``report`` writes
``report.md`` from the finished results.
"""

from ssl_radiology.experiment.cells import Cell, expand_cells
from ssl_radiology.experiment.runner import run_experiment
from ssl_radiology.experiment.spec import ExperimentSpec, load_spec

__all__ = ["Cell", "ExperimentSpec", "expand_cells", "load_spec", "run_experiment"]
