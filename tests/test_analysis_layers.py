"""Layer-wise CKA with forward hooks on tiny timm backbones (ViT blocks, ResNet stages), per pooling."""

import numpy as np
import pytest
import timm
import torch
from torch.utils.data import DataLoader, Dataset

from ssl_radiology.analysis.cka import MultiLayerMinibatchCKA
from ssl_radiology.analysis.layers import layer_cka
from ssl_radiology.features.layers import DEFAULT_POOLING, POOLINGS, pool_activation, select_layers


class _Images(Dataset):
    """Deterministic 1-channel 32 px images in the prepared-dataset dict format."""

    def __init__(self, n: int = 48) -> None:
        self.images = torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "index": i}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_small_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2,
        in_chans=1, num_classes=0,
    )  # fmt: skip
    resnet = timm.create_model("resnet18", in_chans=1, num_classes=0)
    return vit, resnet


def _vit_block_features(vit, images, pooling="mean"):
    """Each block's tokens pooled by hand: patch-token mean, class token, or all patch tokens flattened."""
    x = vit._pos_embed(vit.patch_embed(images))
    features = []
    for block in vit.blocks:
        x = block(x)
        patches = x[:, vit.num_prefix_tokens :]
        pooled = {"mean": patches.mean(dim=1), "cls": x[:, 0], "flat": patches.flatten(1)}
        features.append(pooled[pooling])
    return features


def _resnet_stage_features(resnet, images):
    x = resnet.maxpool(resnet.act1(resnet.bn1(resnet.conv1(images))))
    features = []
    for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        x = stage(x)
        features.append(x.mean(dim=(2, 3)))
    return features


def test_default_layers_per_architecture(models):
    vit, resnet = models
    assert select_layers(vit) == ["blocks.0", "blocks.1", "blocks.2"]
    assert select_layers(resnet) == ["layer1", "layer2", "layer3", "layer4"]
    assert select_layers(resnet, [r"layer[34]"]) == ["layer3", "layer4"]
    with pytest.raises(ValueError, match="top-level modules"):
        select_layers(resnet, [r"blocks\.\d+"])


def test_layer_cka_equals_cka_of_pooled_activations(models):
    vit, resnet = models
    vit.train()
    resnet.eval()
    loader = DataLoader(_Images(), batch_size=16)
    matrix, names_x, names_y = layer_cka(vit, resnet, loader, pooling="mean")
    assert (names_x, names_y) == (select_layers(vit), select_layers(resnet))
    assert vit.training and not resnet.training  # modes restored
    assert not vit.blocks[0]._forward_hooks and not resnet.layer1._forward_hooks  # hooks removed

    expected = MultiLayerMinibatchCKA(3, 4)
    vit.eval()
    with torch.no_grad():
        for batch in loader:
            expected.update(
                _vit_block_features(vit, batch["image"]), _resnet_stage_features(resnet, batch["image"])
            )
    np.testing.assert_allclose(matrix, expected.compute(), atol=1e-6)
    assert np.all(np.isfinite(matrix)) and matrix.shape == (3, 4)


def test_same_model_gives_unit_diagonal(models):
    vit, _ = models
    images = _Images(40).images
    batches = [images[i : i + 10] for i in range(0, 40, 10)] + [images[:2]]  # a too-small tail is skipped
    matrix, names, _ = layer_cka(vit, vit, batches)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-9)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-9)
    assert len(names) == 3


def test_pooling_rules():
    tokens, maps = torch.randn(2, 5, 3), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(pool_activation(tokens), tokens.mean(dim=1))
    torch.testing.assert_close(pool_activation(tokens, "mean", prefix=1), tokens[:, 1:].mean(dim=1))
    torch.testing.assert_close(pool_activation(tokens, "cls", prefix=1), tokens[:, 0])
    torch.testing.assert_close(pool_activation(tokens, "flat", prefix=1), tokens[:, 1:].reshape(2, 12))
    torch.testing.assert_close(pool_activation((maps, None)), maps.mean(dim=(2, 3)))
    torch.testing.assert_close(pool_activation(maps, "flat"), maps.reshape(2, 48))
    with pytest.raises(ValueError, match="cls pooling needs"):
        pool_activation(maps, "cls")
    with pytest.raises(ValueError, match="cls pooling needs"):
        pool_activation(tokens, "cls", prefix=0)
    with pytest.raises(ValueError, match="unknown layer pooling"):
        pool_activation(tokens, "max")
    with pytest.raises(ValueError, match="cannot pool"):
        pool_activation(torch.randn(2, 3, 4, 4, 4))


@pytest.mark.parametrize("pooling", ["cls", "flat"])
def test_vit_pooling_matches_hand_pooled_blocks(models, pooling):
    vit, _ = models
    loader = DataLoader(_Images(), batch_size=16)
    matrix, _, _ = layer_cka(vit, vit, loader, pooling=pooling)
    expected = MultiLayerMinibatchCKA(3, 3)
    with torch.no_grad():
        for batch in loader:
            blocks = _vit_block_features(vit, batch["image"], pooling)
            expected.update(blocks, blocks)
    np.testing.assert_allclose(matrix, expected.compute(), atol=1e-6)


def test_class_token_cka_separates_vit_layers_where_token_means_do_not(models):
    """Issue 12.6: mean-pooled (and flattened) tokens of a small ViT look alike in every block because the
    residual stream dominates, so the heatmap is flat; the class token changes from block to block. Every
    pooling stays within [0, 1], with 1 on the diagonal; the default (auto) is the class token for a ViT."""
    vit, resnet = models
    loader = DataLoader(_Images(), batch_size=16)
    off_diagonal = {}
    for pooling in POOLINGS:
        matrix, _, _ = layer_cka(vit, vit, loader, pooling=pooling)
        assert np.all(matrix >= -1e-9) and np.all(matrix <= 1 + 1e-9)
        np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-9)
        off_diagonal[pooling] = matrix[~np.eye(3, dtype=bool)]
    assert off_diagonal["mean"].min() > 0.99 and off_diagonal["flat"].min() > 0.99
    assert off_diagonal["cls"].max() < 0.9 and off_diagonal["cls"].max() - off_diagonal["cls"].min() > 0.01
    np.testing.assert_array_equal(off_diagonal[DEFAULT_POOLING], off_diagonal["cls"])
    cnn = {p: layer_cka(resnet, resnet, loader, pooling=p)[0] for p in ("auto", "mean", "flat")}
    np.testing.assert_array_equal(cnn["auto"], cnn["mean"])  # no class token: auto is the spatial mean
    assert np.all(cnn["flat"] >= -1e-9) and np.all(cnn["flat"] <= 1 + 1e-9)
    assert not np.allclose(cnn["flat"], cnn["mean"])


def test_analyze_help_lists_the_layer_poolings():
    from ssl_radiology.commands import analyze

    assert analyze.POOLINGS == POOLINGS and analyze.DEFAULT_POOLING == DEFAULT_POOLING
