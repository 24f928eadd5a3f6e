"""tools/convert_checkpoint.py: an official file becomes a backbone checkpoint, or nothing is written."""
import ast
import importlib.util
from pathlib import Path

import pytest
import torch

from mmvitattn.backbones import InLinePVT
from mmvitattn.checkpoint import load_pretrained

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location('convert_checkpoint_tool', ROOT / 'tools' / 'convert_checkpoint.py')
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def official_pvt_t(path, seed=0):
    rows = [line.split('\t') for line in
            (ROOT / 'tests' / 'fixtures' / 'inline_official_keys' / 'pvt_t.tsv').read_text().splitlines() if line]
    g = torch.Generator().manual_seed(seed)
    weights = {k: torch.randn(ast.literal_eval(shape), generator=g) for k, shape in rows}
    torch.save({'model': weights, 'epoch': 299}, path)
    return weights


def test_official_file_converts_and_loads_into_the_detection_backbone(tmp_path, capsys):
    weights = official_pvt_t(tmp_path / 'inline_pvt_t.pth')
    out = tmp_path / 'converted' / 'inline_pvt_t_backbone.pth'
    tool.main([str(tmp_path / 'inline_pvt_t.pth'), str(out), '--model', 'InLinePVT', '--arch', 't',
               '--model-args', 'out_norm=True', '--source-format', 'official'])
    printed = capsys.readouterr().out
    assert 'copied' in printed and 'dropped' in printed and f'wrote {out}' in printed
    saved = torch.load(out, weights_only=True)
    assert set(saved['state_dict']) == set(weights) - {'head.weight', 'head.bias', 'norm.weight', 'norm.bias'}
    assert 'head.weight' in saved['meta']['report']

    backbone = InLinePVT(arch='t', out_norm=True)
    report = load_pretrained(backbone, str(out), logger=None)
    assert report.dropped == {} and all(k.startswith('out_norm') for k in report.new)
    assert all(torch.equal(backbone.state_dict()[k], weights[k]) for k in saved['state_dict'])


def test_a_failed_conversion_writes_nothing(tmp_path):
    official_pvt_t(tmp_path / 'inline_pvt_t.pth')
    out = tmp_path / 'out.pth'
    with pytest.raises(ValueError, match='does not fit'):  # a PVT-T file into a wider model
        tool.main([str(tmp_path / 'inline_pvt_t.pth'), str(out), '--model', 'InLinePVT', '--arch', 'm',
                   '--model-args', 'embed_dims=(64,128,320,1024)'])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['inline_pvt_t.pth']


def test_existing_output_is_not_replaced_without_overwrite(tmp_path):
    official_pvt_t(tmp_path / 'src.pth')
    out = tmp_path / 'out.pth'
    out.write_bytes(b'keep me')
    with pytest.raises(SystemExit, match='--overwrite'):
        tool.main([str(tmp_path / 'src.pth'), str(out), '--model', 'InLinePVT', '--arch', 't'])
    assert out.read_bytes() == b'keep me'
    with pytest.raises(SystemExit, match="unknown backbone 'NoSuchNet'"):
        tool.main([str(tmp_path / 'src.pth'), str(tmp_path / 'new.pth'), '--model', 'NoSuchNet'])
