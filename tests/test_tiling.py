"""Tiled prediction: the sliding window's labels, band by band, in memory that does not grow with the height."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn
from transformers import SegformerImageProcessor

import segtune.tiling
from segtune.errors import DatasetError, RecipeError
from segtune.inference import open_raster, predict_bands, slide_logits, window_grid
from segtune.raster import ArrayRaster, RowCache, TiffRaster, write_tiff
from segtune.recipe import EvalConfig
from tests.conftest import tiny_config

PROCESSOR = SegformerImageProcessor(do_resize=False)


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def tiny_model() -> nn.Module:
    from segtune.models.mix_transformer import MixTransformerForSemanticSegmentation

    torch.manual_seed(0)
    return MixTransformerForSemanticSegmentation(tiny_config()).eval()


class Coarse(nn.Module):
    """Logits rounded to halves: many classes tie, so the argmax's tie-breaking is exercised."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, pixel_values):
        return SimpleNamespace(logits=(self.conv(pixel_values) * 2).round() / 2)


def sliding_window_labels(model: nn.Module, image: np.ndarray, config: EvalConfig) -> np.ndarray:
    """Today's in-memory path: the whole image normalised, `slide_logits`, argmax."""
    pixels = PROCESSOR(Image.fromarray(image), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        logits = slide_logits(model, pixels, config.crop_size, config.stride, config.window_batch)
    return logits.argmax(1)[0].numpy()


def tiled(model: nn.Module, raster, config: EvalConfig) -> list[np.ndarray]:
    return list(predict_bands(model, raster, PROCESSOR, config))


# (height, width, crop, stride, window batch): odd sizes, last windows shifted back inside the image, batches
# that straddle two rows of windows, one column of windows, an image smaller than the window.
GEOMETRIES = [
    (203, 157, (48, 40), (32, 24), 3),
    (190, 61, (64, 64), (40, 48), 4),
    (150, 97, (32, 32), (32, 32), 2),
    (50, 40, (64, 64), (48, 48), 4),
]


@pytest.mark.parametrize("model", [tiny_model(), Coarse()], ids=["mix_transformer", "tied_logits"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}x{g[1]}_crop{g[2][0]}x{g[2][1]}")
def test_tiled_labels_equal_the_sliding_windows_band_by_band(model, geometry):
    height, width, crop, stride, window_batch = geometry
    config = EvalConfig(mode="slide", crop_size=crop, stride=stride, window_batch=window_batch)
    image = scene(height, width)
    bands = tiled(model, ArrayRaster(image), config)
    np.testing.assert_array_equal(np.concatenate(bands), sliding_window_labels(model, image, config))
    assert all(band.shape[1] == width and band.dtype == np.int64 for band in bands)
    window_rows = len({y1 for y1, _, _, _ in window_grid(height, width, crop, stride)})
    assert len(bands) >= window_rows  # the rows leave as they become final, not at the end


def test_an_image_smaller_than_the_window_is_one_window_of_its_own_size():
    """As mmseg's slide_inference (and --mode slide): no padding, one forward pass of the whole image."""
    model, image = Coarse(), scene(37, 23)
    config = EvalConfig(mode="slide", crop_size=(64, 64), stride=(48, 48))
    assert window_grid(37, 23, (64, 64), (48, 48)) == [(0, 37, 0, 23)]
    pixels = PROCESSOR(Image.fromarray(image), return_tensors="pt")["pixel_values"]
    whole = model(pixel_values=pixels).logits.argmax(1)[0].numpy()
    np.testing.assert_array_equal(np.concatenate(tiled(model, ArrayRaster(image), config)), whole)


def test_the_kept_logits_do_not_grow_with_the_image_height(monkeypatch):
    kept = []

    class Recording(segtune.tiling.RowAccumulator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            kept.append(tuple(self.total.shape))

    monkeypatch.setattr(segtune.tiling, "RowAccumulator", Recording)
    config = EvalConfig(mode="slide", crop_size=(32, 32), stride=(24, 24))
    for height in (64, 1000):
        tiled(Coarse(), ArrayRaster(scene(height, 50)), config)
    assert kept == [(4, 32, 50), (4, 32, 50)]  # (classes, window height, width) for both heights


@pytest.mark.slow  # a fresh interpreter (~10 s)
def test_peak_memory_does_not_grow_with_the_image_height():
    """The rise of one process's peak RSS over its RSS before each pass (the peak reset in between): a 512-row
    image tiled, a 12,288-row one tiled (its logits alone would be 240 MB), then the same tall image through
    the in-memory sliding window, to show the measure sees such a rise."""
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from segtune.inference import predict_bands, slide_logits
        from segtune.raster import ArrayRaster
        from segtune.recipe import EvalConfig
        from transformers import SegformerImageProcessor
        from types import SimpleNamespace
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 20, 1)
        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__(); self.conv = conv
            def forward(self, pixel_values):
                return SimpleNamespace(logits=self.conv(pixel_values))
        model, processor = Model(), SegformerImageProcessor(do_resize=False)
        config = EvalConfig(mode="slide", crop_size=(128, 128), stride=(96, 96))
        def kib(field):
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith(field))
        def rise(work):  # MiB: the pass's peak RSS over the RSS it started from
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # the peak (VmHWM) back to the current RSS
            start = kib("VmRSS")
            work()
            print((kib("VmHWM") - start) / 1024)
        def tiled(height):
            for band in predict_bands(model, ArrayRaster(image[:height]), processor, config):
                pass
        image = np.zeros((12288, 256, 3), np.uint8)  # 9 MB, whole in memory from the start
        tiled(256)  # first calls: thread pools, allocator arenas
        for height in (512, 12288):
            rise(lambda: tiled(height))
        with torch.inference_mode():
            pixels = processor(image, return_tensors="pt")["pixel_values"]
            rise(lambda: slide_logits(model, pixels, (128, 128), (96, 96)))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    short, tall, untiled = map(float, done.stdout.split())
    assert tall - short < 30, (short, tall)  # MiB
    assert untiled - tall > 200, (short, tall, untiled)


@pytest.fixture
def tiff_layouts(tmp_path):
    """One RGB image stored five ways: tiled, stripped (odd rows per strip), planar, BigTIFF, uncompressed."""
    image = scene(203, 157, seed=1)
    layouts = {
        "tiled": dict(tile=(32, 48), compression="zlib"),
        "strips": dict(rowsperstrip=7, compression="zlib"),
        "planar": dict(rowsperstrip=16, planarconfig="separate"),
        "bigtiff": dict(tile=(64, 64), bigtiff=True),
        "plain": dict(),
    }
    paths = {}
    for name, options in layouts.items():
        paths[name] = tmp_path / f"{name}.tif"
        planes = image.transpose(2, 0, 1) if name == "planar" else image  # tifffile takes planar data as (3, H, W)
        tifffile.imwrite(paths[name], planes, photometric="rgb", **options)
    return image, paths


def test_a_tiff_read_band_by_band_gives_the_sliding_windows_labels(tiff_layouts):
    image, paths = tiff_layouts
    model, config = tiny_model(), EvalConfig(mode="slide", crop_size=(48, 40), stride=(32, 24), window_batch=3)
    expected = sliding_window_labels(model, image, config)
    for name, path in paths.items():
        with open_raster(path) as raster:
            assert isinstance(raster, TiffRaster), name
            np.testing.assert_array_equal(raster.read(50, 131), image[50:131], err_msg=name)
            np.testing.assert_array_equal(np.concatenate(tiled(model, raster, config)), expected, err_msg=name)


def test_greyscale_and_palette_tiffs_read_as_rgb(tmp_path):
    grey = scene(40, 30)[..., 0]
    tifffile.imwrite(tmp_path / "grey.tif", grey, rowsperstrip=8)
    np.testing.assert_array_equal(TiffRaster(tmp_path / "grey.tif").read(5, 17), np.repeat(grey[5:17, :, None], 3, 2))
    colours = np.arange(256 * 3, dtype=np.uint16).reshape(3, 256) * 80  # TIFF colour maps are 16-bit
    tifffile.imwrite(tmp_path / "palette.tif", grey, photometric="palette", colormap=colours)
    expected = (colours >> 8).astype(np.uint8).T[grey]
    np.testing.assert_array_equal(TiffRaster(tmp_path / "palette.tif").read(0, 40), expected)


def test_the_tiff_reader_reads_only_the_strips_or_tiles_of_the_rows_asked(tmp_path, monkeypatch):
    read = []
    original = tifffile.FileHandle.read_segments

    def recording(self, offsets, bytecounts, indices=None, *args, **kwargs):
        read.extend(indices)
        return original(self, offsets, bytecounts, indices, *args, **kwargs)

    monkeypatch.setattr(tifffile.FileHandle, "read_segments", recording)
    image = scene(500, 200)
    tifffile.imwrite(tmp_path / "strips.tif", image, rowsperstrip=64)
    tifffile.imwrite(tmp_path / "tiles.tif", image, tile=(64, 64))
    with TiffRaster(tmp_path / "strips.tif") as strips, TiffRaster(tmp_path / "tiles.tif") as tiles:
        read.clear()
        np.testing.assert_array_equal(strips.read(300, 420), image[300:420])
        assert read == [4, 5, 6]  # rows 256..447
        read.clear()
        np.testing.assert_array_equal(tiles.read(300, 420), image[300:420])
        assert read == list(range(16, 28))  # tile rows 4..6, 4 tiles each

    with TiffRaster(tmp_path / "tiles.tif") as tiles:  # a whole tiled prediction: each tile about once
        config = EvalConfig(mode="slide", crop_size=(96, 96), stride=(72, 72))
        tiled(Coarse(), tiles, config)
        window_rows = len({y1 for y1, _, _, _ in window_grid(500, 200, (96, 96), (72, 72))})
        assert 32 <= tiles.segments_read <= 32 + 4 * (window_rows - 1)  # 32 tiles; a straddling tile row twice


def test_the_row_cache_holds_only_the_rows_of_the_current_windows():
    raster = ArrayRaster(scene(300, 20))
    requests = []
    read = raster.read
    raster.read = lambda y1, y2: requests.append((y1, y2)) or read(y1, y2)
    cache = RowCache(raster)
    for y1, y2 in [(0, 64), (0, 64), (48, 112), (48, 112), (96, 160), (236, 300)]:
        np.testing.assert_array_equal(cache.rows(y1, y2), read(y1, y2))
        assert cache.top == y1 and len(cache._rows) == y2 - y1
    assert requests == [(0, 64), (64, 112), (112, 160), (236, 300)]


def test_write_tiff_streams_bands_of_any_height(tmp_path):
    labels = np.random.default_rng(0).integers(0, 300, (600, 300)).astype(np.uint16)
    bands = (labels[y : y + n] for y, n in zip((0, 7, 263, 264, 590), (7, 256, 1, 326, 10)))
    np.testing.assert_array_equal(tifffile.imread(write_tiff(tmp_path / "l.tif", bands, 600, 300, np.uint16)), labels)
    colours = scene(300, 40)
    write_tiff(tmp_path / "c.tif", iter([colours[:100], colours[100:]]), 300, 40, np.uint8, rgb=True)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "c.tif"), colours)
    with tifffile.TiffFile(tmp_path / "c.tif") as written:
        assert written.pages.first.tile == (256, 256) and not written.is_bigtiff

    def failing():
        yield labels[:300].astype(np.uint8)
        raise DatasetError("x.tif: cannot read the image (truncated)")

    with pytest.raises(DatasetError, match="truncated"):
        write_tiff(tmp_path / "partial.tif", failing(), 600, 300, np.uint8)
    assert not (tmp_path / "partial.tif").exists()
    with pytest.raises(ValueError, match="expected 600 rows, the bands gave 300"):
        write_tiff(tmp_path / "short.tif", iter([labels[:300]]), 600, 300, np.uint16)


def test_tiling_errors_name_the_file_or_the_setting(tmp_path):
    with pytest.raises(DatasetError, match=r"missing\.tif: cannot read the image \(\[Errno 2\] No such file"):
        open_raster(tmp_path / "missing.tif")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(DatasetError, match=r"broken\.tif: cannot read the TIFF"):
        open_raster(tmp_path / "broken.tif")
    tifffile.imwrite(tmp_path / "deep.tif", np.zeros((8, 8, 3), np.uint16), photometric="rgb")
    with pytest.raises(
        DatasetError, match=r"deep\.tif: expected 8-bit samples \(uint8\), 3 or 4 per pixel, found uint16 x 3"
    ):
        open_raster(tmp_path / "deep.tif")
    tifffile.imwrite(tmp_path / "cmyk.tif", np.zeros((8, 8, 4), np.uint8), photometric="separated")
    with pytest.raises(
        DatasetError, match=r"cmyk\.tif: expected a 2-D greyscale, RGB or palette image, found photometric SEPARATED"
    ):
        open_raster(tmp_path / "cmyk.tif")

    tifffile.imwrite(tmp_path / "jpeg.tif", np.zeros((8, 8, 3), np.uint8), compression="zlib")
    with tifffile.TiffFile(tmp_path / "jpeg.tif") as written:
        where = written.pages.first.tags["Compression"].valueoffset
    data = bytearray((tmp_path / "jpeg.tif").read_bytes())
    data[where : where + 2] = (7).to_bytes(2, "little")  # claim JPEG: tifffile decodes it only with imagecodecs
    (tmp_path / "jpeg.tif").write_bytes(data)
    with pytest.raises(DatasetError, match=r"jpeg\.tif: cannot decode JPEG-compressed data: ") as refused:
        open_raster(tmp_path / "jpeg.tif")
    if importlib.util.find_spec("imagecodecs") is None:
        assert str(refused.value).endswith("requires the 'imagecodecs' package (pip install imagecodecs)")

    raster, model = ArrayRaster(scene(40, 40)), Coarse()
    with pytest.raises(RecipeError, match=r"tile: test-time augmentation \(tta\) rescales and flips the whole image"):
        tiled(model, raster, EvalConfig(mode="slide", tta=True))
    resizing = SegformerImageProcessor(size={"height": 512, "width": 512})
    with pytest.raises(
        RecipeError, match=r"image processor resizes \(size=\{'height': 512, 'width': 512\}, as eval\.resize\)"
    ):
        list(predict_bands(model, raster, resizing, EvalConfig(mode="slide")))
    with pytest.raises(RecipeError, match=r"tile: stride \(40, 24\) above crop_size \(32, 32\) skips pixels"):
        tiled(model, raster, EvalConfig(mode="slide", crop_size=(32, 32), stride=(40, 24)))
