"""The accuracy-versus-latency report: every (model, output stride, target, precision), measured.

Each row is a bundle scored through the runtime and timed with all the others, interleaved. Nothing
is copied from a manifest or an earlier run: every figure in the files is measured by the run that
writes them, on the machine the header names. Several checkpoints (the dense and the separable
head, say) go into one table and one plot, with a ``model`` column naming each by what differs.

The work is split by job, each module importing only those above it in this list:

- :mod:`~edge_deeplab.report.plan`: the combinations, the bundles in a folder, the model labels
- :mod:`~edge_deeplab.report.machine`: the machine and package versions the figures belong to
- :mod:`~edge_deeplab.report.rows`: the :class:`Row` and :class:`Report` data, references, Pareto
- :mod:`~edge_deeplab.report.measure`: scoring and interleaved timing of bundles (torch-free)
- :mod:`~edge_deeplab.report.exporting`: checkpoint -> bundles (torch, lazily)
- :mod:`~edge_deeplab.report.render`: report.md, report.csv, report.json and the plots
- :mod:`~edge_deeplab.report.build`: the two ways in, :func:`report_from_checkpoint` and
  :func:`report_from_bundles`

This package exports the names the commands and tests use, so they import from one place.
"""

from edge_deeplab.report.build import report_from_bundles, report_from_checkpoint
from edge_deeplab.report.exporting import ExportSettings, export_bundles
from edge_deeplab.report.measure import Measurement, SampleList, TimingSettings, measure_bundles
from edge_deeplab.report.plan import Combination, find_bundles, model_labels, plan_combinations, runtime_unavailable
from edge_deeplab.report.render import main_table, to_csv, to_markdown, write_files
from edge_deeplab.report.rows import Report, Row, assign_references, mark_pareto, pareto_front

__all__ = [
    "Combination", "ExportSettings", "Measurement", "Report", "Row", "SampleList", "TimingSettings",
    "assign_references", "export_bundles", "find_bundles", "main_table", "mark_pareto", "measure_bundles",
    "model_labels", "pareto_front", "plan_combinations", "report_from_bundles", "report_from_checkpoint",
    "runtime_unavailable", "to_csv", "to_markdown", "write_files",
]
