// F16 weights: two halves per word.
fn load8(row: u32, c: u32) -> array<vec4<f32>, 2> {
    let b = row + c * 4u;
    return array<vec4<f32>, 2>(
        vec4<f32>(unpack2x16float(w[b]), unpack2x16float(w[b + 1u])),
        vec4<f32>(unpack2x16float(w[b + 2u]), unpack2x16float(w[b + 3u])),
    );
}
