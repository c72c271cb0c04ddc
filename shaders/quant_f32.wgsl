// F32 weights: 8 consecutive floats of row `row` (word offset), chunk `c`.
fn load8(row: u32, c: u32) -> array<vec4<f32>, 2> {
    let b = row + c * 8u;
    return array<vec4<f32>, 2>(
        vec4<f32>(bitcast<f32>(w[b]), bitcast<f32>(w[b + 1u]), bitcast<f32>(w[b + 2u]), bitcast<f32>(w[b + 3u])),
        vec4<f32>(bitcast<f32>(w[b + 4u]), bitcast<f32>(w[b + 5u]), bitcast<f32>(w[b + 6u]), bitcast<f32>(w[b + 7u])),
    );
}
