"""Tests of skfairlayer.torch beyond the layer: isolation, streaming, sampler, skorch."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skfairlayer.torch import (  # noqa: E402
    FairnessLayer,
    GroupStratifiedBatchSampler,
    StreamingFairnessLayer,
)


def test_import_skfairlayer_does_not_import_torch():
    """Check that importing skfairlayer (and its public modules) never imports torch."""
    code = (
        "import sys, skfairlayer, skfairlayer.metrics, skfairlayer._stream, skfairlayer._criteria\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_torch_the_subpackage_says_how_to_install_it():
    """Check that importing skfairlayer.torch without torch raises an ImportError with the remedy."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import skfairlayer\n"
        "try:\n"
        "    import skfairlayer.torch\n"
        "except ImportError as exc:\n"
        "    assert 'pip install skfairlayer[torch]' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _stream(layer, n, seed, sizes=1):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    s = np.clip(0.35 + 0.25 * a + 0.15 * rng.normal(size=n), 0, 1)
    out = []
    for i in range(0, n, sizes):
        out.append(layer(torch.tensor(s[i:i + sizes]), torch.tensor(a[i:i + sizes])))
    return s, a, torch.cat(out).numpy()


@pytest.mark.parametrize("rows_per_call", [1, 16])
def test_stream_pooled_gap_and_certificate(rows_per_call):
    """Check that the pooled gap approaches the tolerance and stays below the certificate."""
    layer = StreamingFairnessLayer(n_groups=2, tolerance=0.02, step=0.05)
    s, a, p = _stream(layer, 4000, 0, rows_per_call)
    raw_gap = abs(s[a == 1].mean() - s[a == 0].mean())
    gap = abs(p[a == 1].mean() - p[a == 0].mean())
    assert gap == pytest.approx(float(layer.pooled_gap()), abs=1e-12)
    assert gap <= float(layer.certificate()) + 1e-12
    assert gap < 0.2 * raw_gap
    assert gap <= 0.02 + 0.01
    assert p.min() >= 0 and p.max() <= 1


def test_stream_state_dict_round_trip():
    """Check that the duals and pooled sums live in buffers that survive state_dict."""
    layer = StreamingFairnessLayer(n_groups=2, tolerance=0.02)
    _stream(layer, 500, 1)
    clone = StreamingFairnessLayer(n_groups=2, tolerance=0.02)
    clone.load_state_dict(layer.state_dict())
    x, g = torch.tensor([0.7, 0.2], dtype=torch.float64), torch.tensor([1, 0])
    torch.testing.assert_close(clone(x, g), layer(x, g))
    assert set(layer.state_dict()) == {"counts", "sums", "dual_up", "dual_down", "v_up", "v_down"}
    layer.reset()
    assert float(layer.counts.sum()) == 0.0 and float(layer.pooled_gap()) == 0.0


def test_stream_errors():
    """Check that invalid stream parameters raise errors naming them."""
    with pytest.raises(ValueError, match="step"):
        StreamingFairnessLayer(2, step=0.0)
    with pytest.raises(ValueError, match="n_groups"):
        StreamingFairnessLayer(0)


def test_sampler_puts_every_group_in_every_batch():
    """Check that each batch holds every group in proportion, and an epoch covers the data."""
    groups = np.r_[np.zeros(900, int), np.ones(80, int), np.full(20, 2)]
    sampler = GroupStratifiedBatchSampler(groups, batch_size=64, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 16
    for b in batches:
        assert len(b) == 64
        counts = np.bincount(groups[b], minlength=3)
        assert counts.min() >= 1
        assert abs(counts[0] - 64 * 0.9) <= 2
    seen = np.unique(np.concatenate(batches))
    assert seen.size >= 950  # without replacement within each group
    assert list(sampler) != batches  # a new shuffle each epoch
    with pytest.raises(ValueError, match="batch_size"):
        GroupStratifiedBatchSampler(groups, batch_size=2)


class _Net(torch.nn.Module):
    """A small MLP whose outputs go through the fairness layer (the skorch recipe)."""

    def __init__(self, n_features=5, n_groups=2, tolerance=0.02):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(n_features, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
        )
        self.layer = FairnessLayer(n_groups=n_groups, tolerance=tolerance)

    def forward(self, x, groups):
        proba = torch.sigmoid(self.body(x).squeeze(-1)).double()
        return self.layer(proba, groups)


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    X[:, 0] += a
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0.5).astype(np.float64)
    return X, a, y


@pytest.mark.filterwarnings("ignore::DeprecationWarning:skorch.*")
def test_skorch_recipe():
    """Check the documented skorch recipe: the layer as last module, groups in a dict X."""
    skorch = pytest.importorskip("skorch")
    X, a, y = _data()
    net = skorch.NeuralNet(
        _Net, criterion=torch.nn.BCELoss, optimizer=torch.optim.Adam, lr=0.01,
        max_epochs=5, batch_size=128, train_split=None, verbose=0,
        iterator_train__shuffle=True, iterator_valid__batch_size=-1,
    )
    torch.manual_seed(0)
    Xd = {"x": X, "groups": a}
    net.fit(Xd, y)
    proba = net.predict_proba(Xd)  # one batch: parity over the whole prediction set
    gap = abs(proba[a == 1].mean() - proba[a == 0].mean())
    assert gap <= 0.02 + 1e-9
    raw = torch.sigmoid(net.module_.body(torch.tensor(X)).squeeze(-1)).detach().numpy()
    assert abs(raw[a == 1].mean() - raw[a == 0].mean()) > 0.02  # the layer did the work


@pytest.mark.filterwarnings("ignore::DeprecationWarning:skorch.*")
def test_skorch_fine_tuning_adapter():
    """Check the fine-tuning protocol of SkorchFineTuning: forward, vjp by finite differences, write."""
    skorch = pytest.importorskip("skorch")
    from skfairlayer.torch import SkorchFineTuning

    X, _, y = _data(200)
    module = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    torch.manual_seed(0)
    net = skorch.NeuralNetBinaryClassifier(module, max_epochs=2, train_split=None, verbose=0)
    model = SkorchFineTuning(net).fit(X, y.astype(np.float32))
    params = model.fine_tune_parameters()
    proba, vjp = model.fine_tune_forward(X, params)
    np.testing.assert_allclose(proba, model.predict_proba(X), atol=1e-6)
    rng = np.random.default_rng(0)
    grad = rng.normal(size=proba.shape)
    grads = vjp(grad)
    direction = [rng.normal(size=p.shape) for p in params]
    h = 1e-3
    up = model.fine_tune_forward(X, [p + h * d for p, d in zip(params, direction, strict=True)])[0]
    down = model.fine_tune_forward(X, [p - h * d for p, d in zip(params, direction, strict=True)])[0]
    fd = np.sum(grad * (up - down)) / (2 * h)
    an = sum(np.sum(gr * d) for gr, d in zip(grads, direction, strict=True))
    assert an == pytest.approx(fd, rel=1e-3, abs=1e-4)
    new = [p + 0.1 for p in params]
    model.set_fine_tune_parameters(new)
    np.testing.assert_allclose(model.predict_proba(X), model.fine_tune_forward(X, new)[0],
                               atol=1e-6)
