"""Configs, the dry run, the Table 2 summary and the two CLI subcommands (no training here)."""

import argparse
import dataclasses
import json

import pandas as pd
import pytest

from rope_lens.errors import InputError
from rope_lens.train.config import CPU, GEMMA_2B, override


def _parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


class TestConfig:
    def test_override(self):
        cfg = override(CPU, ["steps=7", "model.n_layers=2", "eval_lengths=1,2", "compile=true"])
        assert (cfg.steps, cfg.model.n_layers, cfg.eval_lengths, cfg.compile) == (
            7,
            2,
            (1, 2),
            True,
        )

    @pytest.mark.parametrize(
        "bad",
        [
            "steps",
            "nosuch=1",
            "steps=many",
            "model.head_dim=31",
            "dataset=c4",
            "micro_batch_size=5",
        ],
    )
    def test_bad_override(self, bad):
        with pytest.raises(InputError):
            override(CPU, [bad])

    def test_roundtrip(self):
        from rope_lens.train.config import TrainConfig

        assert TrainConfig.from_dict(json.loads(json.dumps(GEMMA_2B.to_dict()))) == GEMMA_2B


class TestDryRun:
    def test_gemma_2b_on_8_gpus(self):
        from rope_lens.train.dryrun import format_plan, plan

        p = plan(GEMMA_2B, 8)
        assert p["tokens_per_step"] == 512 * 8192 == 4_194_304
        assert p["grad_accum_steps"] == 64 and p["fits"]
        assert p["params_total"] == pytest.approx(2.506e9, rel=0.01)
        assert "4,194,304" in format_plan(p)

    def test_indivisible_batch(self):
        from rope_lens.train.dryrun import plan

        with pytest.raises(InputError, match="does not split over 3 GPUs"):
            plan(GEMMA_2B, 3)

    def test_cli(self, capsys):
        from rope_lens.commands import train

        args = _parse(
            train, ["--config", "gemma-2b", "--dry-run", "--gpus", "16", "--encoding", "0.75-RoPE"]
        )
        assert train.run(args) == 0
        out = capsys.readouterr().out
        assert "0.75-rope" in out and "16 GPU(s)" in out and "memory per GPU" in out

    def test_cli_bad_encoding(self):
        from rope_lens.commands import train

        with pytest.raises(InputError, match="unknown encoding"):
            train.run(_parse(train, ["--encoding", "alibi", "--dry-run"]))


def _fake_runs(tmp_path):
    from rope_lens.train.table import grid

    cells = grid(["wiki"], ["nope", "rope", "0.75-rope"], [0, 1])
    base = {"nope": 9.0, "rope": 7.0, "0.75-rope": 6.9}
    for c in cells:
        d = c.run_dir(tmp_path)
        d.mkdir(parents=True)
        ppl = base[c.encoding] + 0.1 * c.seed
        final = {
            f"valid@{k}x": {"loss": 0.0, "ppl": ppl * k, "tokens": 10, "seq_len": 4 * k}
            for k in (1, 2, 4)
        }
        trained = dataclasses.replace(CPU, dataset=c.dataset, encoding=c.encoding, seed=c.seed)
        res = {"step": 5, "final": final, "train_config": trained.to_dict()}
        (d / "results.json").write_text(json.dumps(res | {"data": {"fingerprint": "f0"}}))
    return cells


class TestTable:
    def test_summary_and_markdown(self, tmp_path):
        from rope_lens.train import table

        cells = _fake_runs(tmp_path)
        summary = table.summarise(table.collect(cells, tmp_path))
        row = summary[summary.encoding == "rope"].iloc[0]
        assert row["ppl_valid@1x_mean"] == pytest.approx(7.05) and row["n"] == 2
        assert row["ppl_valid@1x_std"] == pytest.approx(0.0707, abs=1e-3)
        assert row["paper"] == 4.4627
        md = table.format_table(summary)
        assert "| 0.75-RoPE | 6.950 ± 0.071 (n=2) | 4.4414 |" in md
        assert "| RoPE θ = 500k | – | 4.4485 |" in md
        checks = table.ordering(summary, "wiki")
        assert checks["0.75-RoPE <= RoPE 10k"] and "0.25-RoPE < NoPE" not in checks
        paths = table.save(table.collect(cells, tmp_path), summary, tmp_path)
        assert "Length generalisation" in paths["markdown"].read_text()
        assert len(pd.read_csv(paths["runs"])) == 6

    def test_paired_deltas(self, tmp_path):
        """Per-seed % change vs RoPE 10k, beside the paper's relative change."""
        from rope_lens.train import table

        deltas = table.paired_deltas(table.collect(_fake_runs(tmp_path), tmp_path))
        row = deltas[deltas.encoding == "0.75-rope"].iloc[0]
        want = [(6.9 / 7.0 - 1) * 100, (7.0 / 7.1 - 1) * 100]
        assert row["mean"] == pytest.approx(sum(want) / 2) and row["n"] == 2
        assert row["paper"] == pytest.approx((4.4414 / 4.4627 - 1) * 100)
        assert "| 0.75-RoPE | -1.42 ± 0.01 | -0.48 |" in table.format_deltas(deltas)

    def test_cli_collect_only(self, tmp_path, capsys):
        from rope_lens.commands import table as cmd

        _fake_runs(tmp_path)
        args = _parse(cmd, ["--collect-only", "--datasets", "wiki", "--out", str(tmp_path)])
        assert cmd.run(args) == 0
        assert "0.75-RoPE_reversed" in capsys.readouterr().out

    def test_cli_nothing_to_collect(self, tmp_path):
        from rope_lens.commands import table as cmd

        assert cmd.run(_parse(cmd, ["--collect-only", "--out", str(tmp_path)])) == 1


class TestFinishedCells:
    def test_unreadable_results_is_one_clear_error(self, tmp_path):
        from rope_lens.errors import CheckpointError
        from rope_lens.train import table

        cells = _fake_runs(tmp_path)
        (cells[0].run_dir(tmp_path) / "results.json").write_text('{"step": 5, "fin')  # torn
        with pytest.raises(CheckpointError, match="unreadable.*delete it"):
            table.collect(cells, tmp_path)

    def test_finished_cell_from_other_settings_is_not_reused(self, tmp_path):
        """A results.json trained with other settings must not pass as today's cell."""
        from rope_lens.train import table
        from rope_lens.train.config import override

        base = override(CPU, ["steps=7"])
        (cell,) = table.grid(["wiki"], ["rope"], [0])
        d = cell.run_dir(tmp_path)
        d.mkdir(parents=True)
        old = override(CPU, ["steps=5"]).to_dict() | {"encoding": "rope", "seed": 0}
        final = {"valid@1x": {"loss": 1.0, "ppl": 2.7, "tokens": 10, "seq_len": 4}}
        results = {"step": 5, "final": final, "train_config": old}
        (d / "results.json").write_text(json.dumps(results))
        failed = table.run_grid(base, [cell], tmp_path, data_root=tmp_path / "cache")
        assert len(failed) == 1 and "steps" in failed[0] and "different run" in failed[0]
