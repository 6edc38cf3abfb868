import torch

from lecture_lib.data import make_shapes
from lecture_lib.models import ShapesNet, load_shapes_net
from lecture_lib.train import main, train_step


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    images, labels, _ = make_shapes(64, seed=10)
    model = ShapesNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = [train_step(model, optimizer, images, labels) for _ in range(40)]
    assert losses[-1] < 0.8 * losses[0]


def test_cli_writes_loadable_weights(tmp_path, capsys):
    out = tmp_path / "w.pt"
    main(["--out", str(out), "--epochs", "1", "--n-train", "128"])
    assert "validation accuracy" in capsys.readouterr().out
    model = load_shapes_net(path=out)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_predictions_in_passes_are_the_argmax_and_leave_the_mode(shapes_net):
    import pytest

    from lecture_lib.train import accuracy, predictions

    images, labels, _ = make_shapes(50, seed=11)
    with torch.no_grad():
        expected = shapes_net(images).argmax(1)
    shapes_net.train()
    try:
        assert torch.equal(predictions(shapes_net, images, batch_size=7), expected)
        assert shapes_net.training
    finally:
        shapes_net.eval()
    assert torch.equal(predictions(shapes_net, images), expected)
    assert accuracy(shapes_net, images, labels) == (expected == labels).float().mean().item()
    with pytest.raises(ValueError, match="no images"):
        predictions(shapes_net, images[:0])
