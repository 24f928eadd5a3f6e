"""RoIAlign with the semantics of mmcv's CPU kernel (``mmcv._ext.roi_align_forward`` / ``_backward``).

Same arguments and the same in-place contract as mmcv's extension functions: the forward writes
``output`` (and, for max pooling, the sampled point of each bin's maximum into ``argmax_y`` /
``argmax_x``), the backward adds into ``grad_input``. Average pooling runs on torchvision's
``roi_align`` kernels (the same Caffe2-derived algorithm: ``aligned`` half-pixel shift, a minimum
RoI size of 1 when not aligned, ``ceil(roi_size / bins)`` samples per bin for ``sampling_ratio=0``);
max pooling, which torchvision lacks, is plain torch.
"""
import torch
from torch import Tensor

MAX_POOL, AVG_POOL = 0, 1
NO_SAMPLE = -10000.0  # mmcv's start value for a bin's maximum; also the output of an empty bin
# Bilinear samples held at once by the max-pooling path (points x channels), to bound memory.
MAX_POOL_CHUNK = 1 << 24
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types (mixed precision): torchvision's kernels have no bfloat16 version
    and sums of many samples lose precision in float16."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def roi_align_forward(input: Tensor, rois: Tensor, output: Tensor, argmax_y: Tensor, argmax_x: Tensor,
                      aligned_height: int, aligned_width: int, spatial_scale: float, sampling_ratio: int,
                      pool_mode: int, aligned: bool) -> None:
    check_pool_mode(pool_mode)
    if rois.numel() == 0:
        return
    dtype = _compute_dtype(input.dtype)
    input, rois = input.to(dtype), rois.to(dtype)
    if pool_mode == AVG_POOL:
        result = torch.ops.torchvision.roi_align(input, rois, float(spatial_scale), int(aligned_height),
                                                 int(aligned_width), int(sampling_ratio), bool(aligned))
        output.copy_(result)
        return
    value, y, x = _max_pool(input, rois, int(aligned_height), int(aligned_width), float(spatial_scale),
                            int(sampling_ratio), bool(aligned))
    output.copy_(value)
    argmax_y.copy_(y)
    argmax_x.copy_(x)


def roi_align_backward(grad_output: Tensor, rois: Tensor, argmax_y: Tensor, argmax_x: Tensor, grad_input: Tensor,
                       aligned_height: int, aligned_width: int, spatial_scale: float, sampling_ratio: int,
                       pool_mode: int, aligned: bool) -> None:
    check_pool_mode(pool_mode)
    if rois.numel() == 0:
        return
    dtype = _compute_dtype(grad_output.dtype)
    grad_output, rois = grad_output.contiguous().to(dtype), rois.to(dtype)
    n, c, h, w = grad_input.shape
    if pool_mode == AVG_POOL:
        grad = torch.ops.torchvision._roi_align_backward(
            grad_output, rois, float(spatial_scale), int(aligned_height), int(aligned_width), n, c, h, w,
            int(sampling_ratio), bool(aligned))
        grad_input.add_(grad.to(grad_input.dtype))
        return
    # Max pooling: each bin's gradient goes to the four neighbours of its maximum's sample point.
    batch = rois[:, 0].long().view(-1, 1, 1, 1).expand_as(grad_output)
    channel = torch.arange(c, device=grad_output.device).view(1, -1, 1, 1).expand_as(grad_output)
    found = argmax_y != -1.0
    corners = _bilinear_corners(argmax_y[found].to(dtype), argmax_x[found].to(dtype), h, w)
    plane = (batch[found] * c + channel[found]) * (h * w)
    flat = grad_input.new_zeros(grad_input.numel(), dtype=dtype)
    g = grad_output[found]
    for pos, weight, valid in corners:
        flat.index_add_(0, (plane + pos)[valid], (g * weight)[valid])
    grad_input.add_(flat.view_as(grad_input).to(grad_input.dtype))


def check_pool_mode(pool_mode: int) -> None:
    if pool_mode not in (MAX_POOL, AVG_POOL):
        raise ValueError(f'roi_align pool_mode must be 0 (max) or 1 (avg), got {pool_mode!r}')


def _bilinear_corners(y: Tensor, x: Tensor, height: int, width: int):
    """For sample points (y, x): the flat positions and weights of their four bilinear neighbours
    and whether the point is inside the map (mmcv: -1 <= y <= H and -1 <= x <= W, then clamped)."""
    inside = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
    y = y.clamp(min=0)
    x = x.clamp(min=0)
    y_low, x_low = y.floor().long(), x.floor().long()  # the coordinates are >= 0 here: floor == int()
    y_top, x_right = y_low >= height - 1, x_low >= width - 1
    y_low = torch.where(y_top, height - 1, y_low)
    x_low = torch.where(x_right, width - 1, x_low)
    y = torch.where(y_top, y_low.to(y.dtype), y)
    x = torch.where(x_right, x_low.to(x.dtype), x)
    y_high = torch.where(y_top, y_low, y_low + 1)
    x_high = torch.where(x_right, x_low, x_low + 1)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return [(y_low * width + x_low, hy * hx, inside), (y_low * width + x_high, hy * lx, inside),
            (y_high * width + x_low, ly * hx, inside), (y_high * width + x_high, ly * lx, inside)]


def _bin_geometry(rois: Tensor, pooled_h: int, pooled_w: int, spatial_scale: float, sampling_ratio: int,
                  aligned: bool):
    """Per RoI: batch index, start (y, x), bin size (h, w) and samples per bin (h, w), as mmcv."""
    offset = 0.5 if aligned else 0.0
    start_x = rois[:, 1] * spatial_scale - offset
    start_y = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - start_x
    roi_h = rois[:, 4] * spatial_scale - offset - start_y
    if not aligned:  # mmcv's legacy mode: a RoI is at least one pixel
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.long)
        grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.long)
    else:
        grid_h, grid_w = torch.ceil(roi_h / pooled_h).long(), torch.ceil(roi_w / pooled_w).long()
    return rois[:, 0].long(), start_y, start_x, bin_h, bin_w, grid_h, grid_w


def _max_pool(input: Tensor, rois: Tensor, pooled_h: int, pooled_w: int, spatial_scale: float,
              sampling_ratio: int, aligned: bool):
    """mmcv's max pooling mode: the largest bilinear sample per bin and that sample's (y, x)."""
    n, c, h, w = input.shape
    r = rois.shape[0]
    value = input.new_full((r, c, pooled_h, pooled_w), NO_SAMPLE)
    arg_y = input.new_full((r, c, pooled_h, pooled_w), -1.0)
    arg_x = input.new_full((r, c, pooled_h, pooled_w), -1.0)
    batch, start_y, start_x, bin_h, bin_w, grid_h, grid_w = _bin_geometry(
        rois, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned)
    features = input.permute(0, 2, 3, 1).reshape(n * h * w, c)  # one row per pixel
    # RoIs with the same number of samples per bin are pooled together (a few groups in practice).
    groups = torch.stack([grid_h, grid_w], 1)
    for gh, gw in torch.unique(groups, dim=0).tolist():
        if gh <= 0 or gw <= 0:
            continue  # no sample: the bin keeps NO_SAMPLE, its argmax -1 (as mmcv)
        members = torch.nonzero((groups[:, 0] == gh) & (groups[:, 1] == gw)).flatten()
        per_roi = pooled_h * pooled_w * gh * gw * c
        for chunk in members.split(max(1, MAX_POOL_CHUNK // per_roi)):
            _max_pool_group(features, chunk, batch, start_y, start_x, bin_h, bin_w, gh, gw,
                            pooled_h, pooled_w, h, w, value, arg_y, arg_x)
    return value, arg_y, arg_x


def _max_pool_group(features, idx, batch, start_y, start_x, bin_h, bin_w, gh, gw, pooled_h, pooled_w,
                    height, width, value, arg_y, arg_x):
    dtype = features.dtype
    device = features.device
    # Sample coordinates, (R, PH, GH) and (R, PW, GW): start + bin * (p + (i + 0.5) / grid).
    py = torch.arange(pooled_h, device=device, dtype=dtype).view(1, -1, 1)
    px = torch.arange(pooled_w, device=device, dtype=dtype).view(1, -1, 1)
    iy = torch.arange(gh, device=device, dtype=dtype).view(1, 1, -1)
    ix = torch.arange(gw, device=device, dtype=dtype).view(1, 1, -1)
    bh, bw = bin_h[idx].view(-1, 1, 1), bin_w[idx].view(-1, 1, 1)
    ys = start_y[idx].view(-1, 1, 1) + py * bh + (iy + 0.5) * bh / gh
    xs = start_x[idx].view(-1, 1, 1) + px * bw + (ix + 0.5) * bw / gw
    r = idx.numel()
    # Every (RoI, ph, iy, pw, ix) point, flattened so that a bin's samples run iy-major as in mmcv.
    y = ys.view(r, pooled_h, gh, 1, 1).expand(r, pooled_h, gh, pooled_w, gw)
    x = xs.view(r, 1, 1, pooled_w, gw).expand(r, pooled_h, gh, pooled_w, gw)
    y = y.permute(0, 1, 3, 2, 4).reshape(-1)
    x = x.permute(0, 1, 3, 2, 4).reshape(-1)
    base = (batch[idx] * (height * width)).view(-1, 1).expand(r, pooled_h * pooled_w * gh * gw).reshape(-1)
    sample = features.new_zeros(y.numel(), features.shape[1])
    for pos, weight, valid in _bilinear_corners(y, x, height, width):
        sample += features[base + torch.where(valid, pos, 0)] * (weight * valid).unsqueeze(1)
    # (R, PH, PW, GH*GW, C): the maximum over a bin's samples, first one on ties (mmcv's '>').
    sample = sample.view(r, pooled_h, pooled_w, gh * gw, -1)
    best, which = sample.max(dim=3)
    y = y.view(r, pooled_h, pooled_w, gh * gw).gather(3, which)  # each channel's argmax point
    x = x.view(r, pooled_h, pooled_w, gh * gw).gather(3, which)
    kept = best > NO_SAMPLE  # mmcv keeps its start value when no sample exceeds it
    best = torch.where(kept, best, NO_SAMPLE)
    y, x = torch.where(kept, y, -1.0), torch.where(kept, x, -1.0)
    value[idx] = best.permute(0, 3, 1, 2).to(value.dtype)
    arg_y[idx] = y.permute(0, 3, 1, 2).to(arg_y.dtype)
    arg_x[idx] = x.permute(0, 3, 1, 2).to(arg_x.dtype)
