"""How the runner evaluates its rows: every row on the val split, which chooses the recommended row, then
on the test split, read once after every choice. :class:`Evaluation` is the part of
:class:`mcip.experiment.runner.Runner` that does it; a source says which benchmarks a split has
(:meth:`Evaluation.benchmark_specs`) and may choose otherwise (:meth:`Evaluation.recommend`)."""

from __future__ import annotations

from mcip.experiment.rows import ModelRef


def averages_of(report, columns) -> float:
    """A report's AVG over the table's columns (-inf when nothing was measured)."""
    from mcip.eval.report import averages, group_columns

    value = averages(report, group_columns([(n, f) for n, f, _ in columns]))["AVG"][0]
    return float("-inf") if value is None else value


def markdown_table_of(reports, columns) -> str:
    from mcip.eval.report import markdown_table

    return markdown_table(reports, [(n, f) for n, f, _ in columns])


class Evaluation:
    """The runner's evaluation of the rows (a part of :class:`mcip.experiment.runner.Runner`, which holds
    ``data``, ``out`` and ``cache``); sets ``columns``, (benchmark, family, table-1 metric) per column."""

    def benchmark_specs(self, split: str = "test") -> list[str]:
        """The ``mcip eval`` benchmark specs of ``split`` (``val`` or ``test``; read from
        ``self.data['root']``)."""
        raise NotImplementedError

    def evaluate(self, models: dict[str, ModelRef], split: str = "test"):
        """Every row on ``split`` (``val`` chooses, ``test`` reports); the report files go to
        ``OUT/results`` (test) or ``OUT/results/val``."""
        from mcip.eval.benchmarks import resolve_benchmarks
        from mcip.eval.report import group_columns, markdown_table, teaser_plot, write_report
        from mcip.eval.runner import evaluate_models

        benchmarks = resolve_benchmarks(",".join(self.benchmark_specs(split)))
        reports = evaluate_models(list(models.values()), benchmarks, self.data["root"], cache_dir=self.cache)
        for row, report in zip(models, reports, strict=True):
            report.model = row
        self.columns = [(b.name, b.family, b.table1_metric) for b in benchmarks]
        folder = self.out / "results" if split == "test" else self.out / "results" / split
        files = write_report(reports, self.columns, folder)
        curve = self.wise_curve_points()
        if split == "test" and curve and "plot" in files:  # the teaser with the WiSE-FT trade-off curve
            pairs = [(n, f) for n, f, _ in self.columns]
            teaser_plot(reports, group_columns(pairs), files["plot"], curve)
        table = markdown_table(reports, [(b.name, b.family) for b in benchmarks])
        return reports, files, table

    def test_is_val(self) -> bool:
        """True when the source has no test split of its own (the report is then on val)."""
        return False

    def recommend(self, reports) -> str:
        """The row to index, from the VAL reports: the best AVG among the rows with every column measured."""
        complete = [r for r in reports if not r.missing] or list(reports)  # text queries need a text side
        return max(complete, key=lambda r: averages_of(r, self.columns)).model

    def report_on_test(self, models: dict[str, ModelRef], val_reports):
        """The test evaluation (read once, after every choice), or the val one written as the report when
        the source has no test split of its own; (reports, files, table)."""
        if self.test_is_val():
            from mcip.eval.report import write_report

            self.log("[6/7] no test split of its own: the report is on the val images")
            files = write_report(val_reports, self.columns, self.out / "results")  # the report's place
            return val_reports, files, markdown_table_of(val_reports, self.columns)
        self.log("[6/7] evaluation on the test split (read once, after every choice)")
        return self._timed("evaluation (test)", lambda: self.evaluate(models, "test"))
