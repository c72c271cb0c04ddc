// attention.wgsl's tile reductions with subgroup operations: one barrier each instead of a
// seven-barrier tree. The entry point stores the subgroup size in SGS (at least 8 here).

var<private> SGS: u32 = 32u;
var<workgroup> sg_max: array<f32, 64>;
var<workgroup> sg_sum: array<f32, 64>;

fn tile_max(tid: u32, v: f32) -> f32 {
    let x = subgroupMax(select(-3.0e38, v, tid < 64u));
    if tid < 64u && tid % SGS == 0u {
        sg_max[tid / SGS] = x;
    }
    workgroupBarrier();
    var r = -3.0e38;
    for (var i = 0u; i < max(64u / SGS, 1u); i++) {
        r = max(r, sg_max[i]);
    }
    return r;
}

fn tile_sum(tid: u32, v: f32) -> f32 {
    let x = subgroupAdd(select(0.0, v, tid < 64u));
    if tid < 64u && tid % SGS == 0u {
        sg_sum[tid / SGS] = x;
    }
    workgroupBarrier();
    var r = 0.0;
    for (var i = 0u; i < max(64u / SGS, 1u); i++) {
        r += sg_sum[i];
    }
    return r;
}
