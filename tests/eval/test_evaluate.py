"""``mcip.evaluate``: the library call behind ``mcip eval`` (typed arguments, report files, row names)."""

from __future__ import annotations

import json

from PIL import Image

import mcip
from mcip.eval.benchmarks import resolve_benchmarks


def test_evaluate_names_rows_and_writes_the_report(model_specs, tmp_path):
    images = tmp_path / "imgs"
    for c, rgb in enumerate([(200, 20, 20), (20, 20, 200)]):
        (images / f"class{c}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20 + i, 20), rgb).save(images / f"class{c}" / f"{i}.png")
    benchmarks = resolve_benchmarks(f"folder_i2i:path={images}")
    result = mcip.evaluate(
        {"tiny": model_specs["openclip"]["spec"]}, benchmarks, out=tmp_path / "out", cache_dir=tmp_path / "c"
    )
    assert [r.model for r in result.reports] == ["tiny"]
    assert result.columns == [("folder_i2i", "i2i", benchmarks[0].table1_metric)]
    assert "| tiny |" in result.table and result.files["markdown"].read_text() == result.table
    data = json.loads(result.files["json"].read_text())
    assert data["models"][0]["model"] == "tiny" and set(data["models"][0]["results"]) == {"folder_i2i"}
