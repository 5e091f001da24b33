"""Theory figures build from the theory frames; the ``theory`` command validates its input."""

import ast
import math
from pathlib import Path

import plotly.graph_objects as go
import pytest

from rope_lens import theory as T
from rope_lens.commands import theory as command
from rope_lens.errors import InputError
from rope_lens.viz import theory as V

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class TestFigures:
    """Every figure function returns a go.Figure with one trace per group of its frame."""

    def test_activation(self):
        frame = T.decay_frame(d_heads=(8, 16), max_distance=50)
        fig = V.activation_figure(frame, "t")
        assert isinstance(fig, go.Figure)
        assert len(fig.data) == 5  # constant: d=8, d=16, limit; gaussian: d=8, d=16
        assert sum(t.showlegend is not False for t in fig.data) == 3
        rr = T.random_rope_frame((100, 200), n_positions=50, d_head=8)
        assert len(V.activation_figure(rr, "t", x="index").data) == 6

    def test_small_figures(self):
        spec = T.encoding_spec("rope", 8)
        mc = T.gaussian_expectation(spec, [0, 1, 5], 200)
        assert len(V.gaussian_mean_figure(mc, "t").data) == 1
        _, profiles = T.distance_argmax(spec, [0, 3], max_distance=20)
        assert len(V.distance_argmax_figure(profiles, "t").data) == 2
        draws = T.random_weight_search(spec, 50)
        attack = T.adversarial_search(spec, steps=3, restarts=2)
        assert len(V.nope_bound_figure(draws, attack, "t").data) == 2
        sharp = T.positional_sharpness(spec, [1.0, 10.0], n_positions=8)
        assert len(V.sharpness_figure(sharp, "t").data) == 2
        norms = T.required_norm_by_band(spec, (2, 16))
        assert len(V.required_norm_figure(norms, "t").data) == 2
        over = T.overtaking_table([T.encoding_spec("p-rope", 8, 100.0)], (math.pi,))
        fig = V.overtaking_figure(over, "t", contexts=(100,))
        assert "never" in fig.data[0].name  # the zero-frequency chunks are called out


class TestCommand:
    def test_formats(self):
        assert command.parse_formats("png, SVG") == ["html", "png", "svg"]
        assert command.parse_formats("html") == ["html"]
        with pytest.raises(InputError):
            command.parse_formats("gif")

    def test_contract(self):
        assert command.NAME == "theory" and command.HELP
        tree = ast.parse(Path(command.__file__).read_text())
        top = {
            a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names
        }
        top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
        assert top <= {"__future__", "argparse", "importlib", "logging", "math", "pathlib", "sys"}
