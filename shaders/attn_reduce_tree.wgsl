// attention.wgsl's tile reductions as shared-memory trees (devices without subgroups).

var<workgroup> red: array<f32, 64>;

fn tile_max(tid: u32, v: f32) -> f32 {
    if tid < 64u {
        red[tid] = v;
    }
    workgroupBarrier();
    for (var st = 32u; st > 0u; st >>= 1u) {
        if tid < st {
            red[tid] = max(red[tid], red[tid + st]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn tile_sum(tid: u32, v: f32) -> f32 {
    if tid < 64u {
        red[tid] = v;
    }
    workgroupBarrier();
    for (var st = 32u; st > 0u; st >>= 1u) {
        if tid < st {
            red[tid] += red[tid + st];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
