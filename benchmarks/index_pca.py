"""Smaller vectors for big collections: recall@10 and FAISS index size of ``mcip index build --dim K`` (the
vectors projected on their top K principal directions, uncentred, before a Flat index) against the
full-dimension exact index, measured in one run.

Queries are image-to-image (each of up to ``--queries`` indexed images queries the index; the exact
full-dimension top 10 is the reference, the query itself included on both sides) and, when the records
have captions, text-to-image (their first captions, encoded by the model's text tower). Recall@10 = the
share of the reference top 10 that the reduced index returns in its top 10.

    python benchmarks/index_pca.py --model lab-results/runs/guard-rea/model --images lab-results/data/test.jsonl
    python benchmarks/index_pca.py --synthetic              # clustered random vectors (no model)

Ends with one line per K: ``RESULT index_pca{K}_recall_at_10 VALUE target >=0.90`` and the size ratio.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from mcip.index import IndexRecord, SearchIndex, build_index, index_embeddings

TARGET = 0.90


def exact_top(emb: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ emb.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall_at(reference: np.ndarray, found: np.ndarray) -> float:
    k = reference.shape[1]
    return float(np.mean([len(set(r) & set(f)) / k for r, f in zip(reference, found, strict=True)]))


def synthetic(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(n // 50, 2), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(
    emb: np.ndarray,
    records: list,
    dims: list[int],
    queries: int,
    text_queries: np.ndarray | None,
    work: Path,
    k: int = 10,
) -> dict:
    """Recall@k and index bytes per K (and for the full dimension)."""
    rng = np.random.default_rng(0)
    rows = rng.choice(len(emb), size=min(queries, len(emb)), replace=False)
    image_q = emb[rows]
    index_embeddings(emb, records, work / "full", factory="Flat")
    full_bytes = (work / "full" / "faiss.index").stat().st_size
    out = {"n": len(emb), "dim": emb.shape[1], "full_bytes": full_bytes, "by_dim": {}}
    for dim in dims:
        folder = work / f"pca{dim}"
        index_embeddings(emb, records, folder, factory="Flat", dim=dim)
        with SearchIndex.open(folder, load_model=False) as index:
            row = {"bytes": (folder / "faiss.index").stat().st_size}
            found = [[index.row_of(h.id) for h in index.search_vector(q, k=k)] for q in image_q]
            row["image_recall"] = recall_at(exact_top(emb, image_q, k), np.asarray(found))
            if text_queries is not None:
                found = [[index.row_of(h.id) for h in index.search_vector(q, k=k)] for q in text_queries]
                row["text_recall"] = recall_at(exact_top(emb, text_queries, k), np.asarray(found))
        row["size_ratio"] = row["bytes"] / full_bytes
        out["by_dim"][dim] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model spec or folder (with --images)")
    parser.add_argument("--images", help="image folder or manifest to index")
    parser.add_argument("--synthetic", action="store_true", help="clustered random unit vectors instead")
    parser.add_argument("--n", type=int, default=20_000, help="synthetic vectors (20,000)")
    parser.add_argument("--d", type=int, default=384, help="synthetic dimension (384)")
    parser.add_argument("--dims", default="64,128,256", help="K values (64,128,256)")
    parser.add_argument("--queries", type=int, default=1000, help="image queries sampled (1000)")
    args = parser.parse_args()
    dims = [int(x) for x in args.dims.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text_q = None
        if args.synthetic:
            emb = synthetic(args.n, args.d)
            records = [IndexRecord(str(i), Path(f"{i}.png")) for i in range(len(emb))]
        else:
            if not (args.model and args.images):
                parser.error("give --model and --images, or --synthetic")
            build_index(args.model, args.images, work / "encoded", progress=False)
            with SearchIndex.open(work / "encoded") as index:
                emb = np.asarray(index.embeddings, dtype=np.float32)
                records = list(index.iter_records())
                texts = sorted({r.captions[0] for r in records if r.captions})[: args.queries]
                if texts:
                    text_q = np.stack([index.encode_text(t) for t in texts])
        result = measure(emb, records, dims, args.queries, text_q, work)
    print(
        f"{result['n']} vectors of {result['dim']} dimensions; FAISS Flat index {result['full_bytes'] / 2**20:.1f} MiB"
    )
    print("| K | index size vs full | image-query recall@10 | text-query recall@10 |")
    print("|---|---|---|---|")
    for dim, row in result["by_dim"].items():
        text = f"{row['text_recall']:.3f}" if "text_recall" in row else "n/a"
        print(f"| {dim} | {row['size_ratio']:.3f} | {row['image_recall']:.3f} | {text} |")
    for dim, row in result["by_dim"].items():
        print(f"RESULT index_pca{dim}_recall_at_10 {row['image_recall']:.3f} target >={TARGET}")
        print(
            f"RESULT index_pca{dim}_size_ratio {row['size_ratio']:.3f} target <={dim / result['dim'] + 0.05:.2f}"
        )


if __name__ == "__main__":
    main()
