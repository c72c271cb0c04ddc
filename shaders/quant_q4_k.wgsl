// Q4_K, 36 words per 256-element block: [d: f16, dmin: f16] [scales: 12 bytes] [qs: 128 bytes].
// Group g (32 elements) uses 6-bit scale/min g (ggml's get_scale_min_k4); elements of groups
// 2j and 2j+1 are the low and high nibbles of qs[32j ..]; value d·sc·q − dmin·m.
fn nib4(q: u32, sh: u32) -> vec4<f32> {
    return vec4<f32>(f32(extractBits(q, sh, 4u)), f32(extractBits(q, 8u + sh, 4u)),
                     f32(extractBits(q, 16u + sh, 4u)), f32(extractBits(q, 24u + sh, 4u)));
}

fn scale_byte(b: u32, k: u32) -> u32 {
    return extractBits(w[b + 1u + k / 4u], (k % 4u) * 8u, 8u);
}

fn load8(row: u32, c: u32) -> array<vec4<f32>, 2> {
    let b = row + (c / 32u) * 36u;
    let sub = c % 32u;
    let g = sub / 4u;
    let j = g / 2u;
    let hi = g % 2u;
    var sc: u32;
    var mn: u32;
    if g < 4u {
        sc = scale_byte(b, g) & 63u;
        mn = scale_byte(b, g + 4u) & 63u;
    } else {
        sc = (scale_byte(b, g + 4u) & 15u) | ((scale_byte(b, g - 4u) >> 6u) << 4u);
        mn = (scale_byte(b, g + 4u) >> 4u) | ((scale_byte(b, g) >> 6u) << 4u);
    }
    let dm = unpack2x16float(w[b]);
    let d1 = dm.x * f32(sc);
    let m1 = dm.y * f32(mn);
    let wi = b + 4u + j * 8u + (sub % 4u) * 2u;
    let sh = hi * 4u;
    return array<vec4<f32>, 2>(nib4(w[wi], sh) * d1 - m1, nib4(w[wi + 1u], sh) * d1 - m1);
}
