// Q4_0, uploaded as 5 words per block: [d: f16, pad: u16] [qs: 16 bytes].
// Element i < 16 is the low nibble of qs[i], element 16 + i its high nibble; value (q - 8)·d.
fn nib4(q: u32, sh: u32) -> vec4<f32> {
    return vec4<f32>(f32(extractBits(q, sh, 4u)), f32(extractBits(q, 8u + sh, 4u)),
                     f32(extractBits(q, 16u + sh, 4u)), f32(extractBits(q, 24u + sh, 4u)));
}

fn load8(row: u32, c: u32) -> array<vec4<f32>, 2> {
    let b = row + (c / 4u) * 5u;
    let sub = c % 4u;
    let d = unpack2x16float(w[b]).x;
    let wi = b + 1u + (sub & 1u) * 2u;
    let sh = (sub >> 1u) * 4u;
    return array<vec4<f32>, 2>((nib4(w[wi], sh) - 8.0) * d, (nib4(w[wi + 1u], sh) - 8.0) * d);
}
