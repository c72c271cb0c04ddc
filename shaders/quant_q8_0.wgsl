// Q8_0, uploaded as 9 words per block: [d: f16, pad] [qs: 32 × i8]; value q·d.
fn sbyte4(q: u32) -> vec4<f32> {
    let s = bitcast<i32>(q);
    return vec4<f32>(f32(extractBits(s, 0u, 8u)), f32(extractBits(s, 8u, 8u)),
                     f32(extractBits(s, 16u, 8u)), f32(extractBits(s, 24u, 8u)));
}

fn load8(row: u32, c: u32) -> array<vec4<f32>, 2> {
    let b = row + (c / 4u) * 9u;
    let sub = c % 4u;
    let d = unpack2x16float(w[b]).x;
    let wi = b + 1u + sub * 2u;
    return array<vec4<f32>, 2>(sbyte4(w[wi]) * d, sbyte4(w[wi + 1u]) * d);
}
