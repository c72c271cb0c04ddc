// matvec.wgsl's sums as shared-memory trees (devices without subgroups, the browser).

var<workgroup> red: array<f32, 256>;

// Σ v over the `tpr` lanes of this invocation's row group (every lane gets it).
fn row_group_sum(tid: u32, v: f32, tpr: u32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = tpr / 2u; s > 0u; s >>= 1u) {
        if tid % tpr < s {
            red[tid] += red[tid + s];
        }
        workgroupBarrier();
    }
    let r = red[tid - tid % tpr];
    workgroupBarrier();
    return r;
}

// Σ v over the workgroup (every invocation gets it).
fn workgroup_sum(tid: u32, v: f32) -> f32 {
    return row_group_sum(tid, v, WG);
}
