// matvec.wgsl's sums with subgroup operations. The entry point stores the subgroup size in SGS
// (8 or more; the lanes of a row group are consecutive invocations, so a row group of at most
// SGS lanes lies within one subgroup, and a larger one spans whole subgroups).

var<private> SGS: u32 = 32u;
var<workgroup> sg_part: array<f32, 64>;

// Σ v over the `tpr` lanes of this invocation's row group (every lane gets it).
fn row_group_sum(tid: u32, v: f32, tpr: u32) -> f32 {
    var a = v;
    for (var o = min(tpr, SGS) / 2u; o > 0u; o >>= 1u) {
        a += subgroupShuffleXor(a, o);
    }
    if tpr <= SGS {
        return a;
    }
    // A row group of several subgroups: their sums through shared memory.
    if tid % SGS == 0u {
        sg_part[tid / SGS] = a;
    }
    workgroupBarrier();
    let per = tpr / SGS;
    let first = (tid / tpr) * per;
    var r = 0.0;
    for (var i = 0u; i < per; i++) {
        r += sg_part[first + i];
    }
    workgroupBarrier();
    return r;
}

// Σ v over the workgroup (every invocation gets it).
fn workgroup_sum(tid: u32, v: f32) -> f32 {
    let a = subgroupAdd(v);
    if tid % SGS == 0u {
        sg_part[tid / SGS] = a;
    }
    workgroupBarrier();
    var r = 0.0;
    for (var i = 0u; i < WG / SGS; i++) {
        r += sg_part[i];
    }
    workgroupBarrier();
    return r;
}
