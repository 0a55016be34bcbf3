"""The runner's last step: the test images indexed with the recommended row (``OUT/index``) and a few
example queries, text and image, against the one embedding (``OUT/results/search.md``).
:class:`SearchDemo` is the part of :class:`mcip.experiment.runner.Runner` that does it; a source gives the
queries (:meth:`SearchDemo.demo_queries`) and what to show of a hit."""

from __future__ import annotations

from mcip.experiment.rows import ModelRef


class SearchDemo:
    """The runner's search demo (a part of :class:`mcip.experiment.runner.Runner`, which holds ``data``,
    ``out`` and ``progress``)."""

    demo_column = "label"

    def demo_queries(self, index) -> list[tuple[str, str, str]]:
        """(kind ``text``/``image``, query, how to show it) for the search demo."""
        raise NotImplementedError

    def demo_label(self, hit) -> str:
        """What the search demo shows of a hit."""
        return str(hit.metadata.get("label", ""))

    def search_demo(self, model: ModelRef, row: str) -> str:
        """Index the test images with ``model`` and run the source's example queries."""
        from mcip.index import SearchIndex, build_index

        index_dir = self.out / "index"
        build_index(model, self.data["test"], index_dir, progress=self.progress)
        lines = [f"# One embedding, two kinds of query ({row}, test images)", ""]
        with SearchIndex.open(index_dir) as index:
            for kind, query, shown in self.demo_queries(index):
                hits = index.search(**{kind: query}, k=5)
                lines += [f"{kind} query: {shown}", ""]
                lines += [f"| rank | score | image | {self.demo_column} |", "|---|---|---|---|"]
                for hit in hits:
                    lines.append(f"| {hit.rank} | {hit.score:.3f} | {hit.id} | {self.demo_label(hit)} |")
                lines.append("")
        text = "\n".join(lines)
        (self.out / "results" / "search.md").write_text(text, encoding="utf-8")
        return text
