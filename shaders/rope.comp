#version 450
// Rotary embedding in place on x[B*S, H*hd], HF rotate-half pairing:
//   x'[i]        = x[i] * cos - x[i + hd/2] * sin
//   x'[i + hd/2] = x[i + hd/2] * cos + x[i] * sin
// with angle = (row % S) * theta^(-2i/hd); inverse negates the angle.
// ROW0 is the first row of this dispatch when the host splits x in chunks.
// One invocation per rotated pair, so in-place needs no ordering.
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"

layout(set = 0, binding = 0, std430) buffer X { float x[]; };

layout(push_constant) uniform Push {
    uint off_x;
    uint rows, S, H, hd, row0;
    float log2_theta;   // log2(theta), computed by the host in double
    float sign;         // +1 forward, -1 inverse
} pc;

void main()
{
    uint half_hd = pc.hd / 2u;
    uint pairs_per_row = pc.H * half_hd;
    OPS_FOR(e, pc.rows * pairs_per_row) {
        uint row = e / pairs_per_row;
        uint rest = e - row * pairs_per_row;
        uint h = rest / half_hd, i = rest - h * half_hd;
        float inv_freq = exp2(-float(2u * i) / float(pc.hd) * pc.log2_theta);
        float angle = float((pc.row0 + row) % pc.S) * inv_freq;
        float s, c;
        ops_sincos(angle, s, c);
        s *= pc.sign;
        uint base = pc.off_x + row * pc.H * pc.hd + h * pc.hd + i;
        float a = x[base], b = x[base + half_hd];
        x[base] = a * c - b * s;
        x[base + half_hd] = b * c + a * s;
    }
}
