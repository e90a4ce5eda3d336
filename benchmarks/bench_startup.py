"""How fast a process that loads the definitions starts: imports, and a label-change run.

    python benchmarks/bench_startup.py [--repeat 5] [--images 120]

1. `import dagster` and `import imgrank_dagster.definitions`, each in a fresh process (median
   of --repeat), and their ratio. Target: the definitions at most 1.6x Dagster alone. Also which
   heavy libraries loading the definitions imports (target: none of them).
2. The label-change run as its own process, as the daemon's run worker is one: a small demo
   collection is ranked once in a temporary folder, then each repetition adds labels and runs
   `dagster job execute -j apply_labels` for it. "start" is the time from spawning the process
   to the run's RUN_START event (the code location loaded), "steps" the steps' own time.

Nothing is asserted; figures and the machine's load are printed. It uses only the CLI and
Dagster's instance, so the same script measures an older checkout (PYTHONPATH=<checkout>).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("pandas", "numpy", "pyarrow", "sklearn", "scipy", "matplotlib", "fiftyone", "fastdup")
HEAVY += ("PIL", "requests")


def fresh_process_seconds(code: str, env: dict[str, str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        times.append(time.perf_counter() - started)
    return times


def heavy_modules(env: dict[str, str]) -> list[str]:
    code = (
        "import sys, json; import imgrank_dagster.definitions; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def label_change_runs(env: dict[str, str], data_dir: Path, repeat: int) -> list[dict[str, float]]:
    import dagster as dg

    labels = data_dir / "demo" / "labels" / "labels.csv"
    ranking = (data_dir / "exports" / "demo" / "all_score_after_rank.csv").read_text()
    unlabelled = [line.split(",")[1] for line in ranking.splitlines()[1 : repeat + 1]]
    figures = []
    for number in range(repeat):
        with labels.open("a") as handle:
            handle.write(f"{unlabelled[number]}\n")
        command = [sys.executable, "-m", "dagster", "job", "execute"]
        command += ["-m", "imgrank_dagster.definitions", "-j", "apply_labels"]
        command += ["--tags", json.dumps({"dagster/partition": "demo"})]
        spawned = time.time()
        subprocess.run(command, env=env, check=True, capture_output=True)
        finished = time.time()
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            record = instance.get_run_records(dg.RunsFilter(job_name="apply_labels"), limit=1)[0]
            run_id = record.dagster_run.run_id
            stats = instance.get_run_stats(run_id)
            steps = sum(s.end_time - s.start_time for s in instance.get_run_step_stats(run_id))
        figures.append(
            {
                "start": stats.start_time - spawned,
                "steps": steps,
                "wall": finished - spawned,
            }
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--images", type=int, default=120)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="imgrank-bench-startup-") as tmp:
        root = Path(tmp)
        data_dir, home = root / "data", root / "dagster_home"
        data_dir.mkdir()
        home.mkdir()
        collections = "collections:\n  demo:\n    source: {type: folder, path: demo/images}\n"
        (data_dir / "collections.yaml").write_text(collections + "    labels: demo/labels\n")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "IMGRANK_DATA_DIR": str(data_dir),
            "FIFTYONE_DATABASE_DIR": str(root / "fiftyone"),
        }
        env.pop("IMGRANK_WAREHOUSE", None)
        dagster = fresh_process_seconds("import dagster", env, args.repeat)
        definitions = fresh_process_seconds("import imgrank_dagster.definitions", env, args.repeat)
        heavy = heavy_modules(env)
        print(f"import dagster:                     median {statistics.median(dagster):.2f} s")
        print(f"import imgrank_dagster.definitions: median {statistics.median(definitions):.2f} s")
        ratio = statistics.median(definitions) / statistics.median(dagster)
        print(f"ratio:                              {ratio:.2f} (target <= 1.6)")
        print(f"heavy libraries imported by the definitions: {', '.join(heavy) or 'none'}")

        print(f"\nranking a {args.images}-image demo collection once ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "imgrank_dagster.cli", "demo", "--images", str(args.images)],
            env=env,
            check=True,
            capture_output=True,
        )
        runs = label_change_runs(env, data_dir, args.repeat)
        print("label-change run (apply_labels) as its own process:")
        for name in ("start", "steps", "wall"):
            values = [run[name] for run in runs]
            print(
                f"  {name:<6} median {statistics.median(values):5.2f} s  "
                f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} runs)"
            )
    load_after = os.getloadavg()
    print(f"\nload average (1, 5 min) before: {load_before[0]:.2f}, {load_before[1]:.2f}; ", end="")
    print(f"after: {load_after[0]:.2f}, {load_after[1]:.2f}; cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
