// Q5_0, uploaded as 6 words per block: [d: f16, pad] [qh: u32] [qs: 16 bytes].
// Element i: low 4 bits from qs as in Q4_0, fifth bit is bit i of qh; value (q - 16)·d.
fn nib4(q: u32, sh: u32) -> vec4<f32> {
    return vec4<f32>(f32(extractBits(q, sh, 4u)), f32(extractBits(q, 8u + sh, 4u)),
                     f32(extractBits(q, 16u + sh, 4u)), f32(extractBits(q, 24u + sh, 4u)));
}

fn bit4(qh: u32, first: u32) -> vec4<f32> {
    return vec4<f32>(f32(extractBits(qh, first, 1u)), f32(extractBits(qh, first + 1u, 1u)),
                     f32(extractBits(qh, first + 2u, 1u)), f32(extractBits(qh, first + 3u, 1u)));
}

fn load8(row: u32, c: u32) -> array<vec4<f32>, 2> {
    let b = row + (c / 4u) * 6u;
    let sub = c % 4u;
    let d = unpack2x16float(w[b]).x;
    let qh = w[b + 1u];
    let wi = b + 2u + (sub & 1u) * 2u;
    let sh = (sub >> 1u) * 4u;
    let lo = nib4(w[wi], sh) + bit4(qh, sub * 8u) * 16.0;
    let hi = nib4(w[wi + 1u], sh) + bit4(qh, sub * 8u + 4u) * 16.0;
    return array<vec4<f32>, 2>((lo - 16.0) * d, (hi - 16.0) * d);
}
