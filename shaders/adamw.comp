#version 450
// AdamW step over n parameters (decoupled weight decay). The 8
// hyperparameters and the squared global gradient norm are read from
// tensors, so a replayed command buffer picks up each step's values:
//   hp = {lr, beta1, beta2, eps, weight_decay, 1-beta1^t, 1-beta2^t, max_norm}
//   g' = g * min(1, max_norm / (sqrt(gnorm_sq) + 1e-6))   (max_norm > 0)
//   m = b1 m + (1-b1) g',  v = b2 v + (1-b2) g'^2
//   p -= lr * (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd * p)
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"

layout(set = 0, binding = 0, std430) buffer Param { float param[]; };
layout(set = 0, binding = 1, std430) readonly buffer Grad { float grad[]; };
layout(set = 0, binding = 2, std430) buffer M { float m1[]; };
layout(set = 0, binding = 3, std430) buffer Vs { float m2[]; };
layout(set = 0, binding = 4, std430) readonly buffer Hp { float hp[]; };
layout(set = 0, binding = 5, std430) readonly buffer Gnorm { float gnorm_sq[]; };

layout(push_constant) uniform Push {
    uint off_p, off_g, off_m, off_v, off_hp, off_gnorm;
    uint n;
} pc;

void main()
{
    float lr = hp[pc.off_hp + 0u], b1 = hp[pc.off_hp + 1u];
    float b2 = hp[pc.off_hp + 2u], eps = hp[pc.off_hp + 3u];
    float wd = hp[pc.off_hp + 4u], bc1 = hp[pc.off_hp + 5u];
    float bc2 = hp[pc.off_hp + 6u], max_norm = hp[pc.off_hp + 7u];
    float clip = 1.0f;
    if (max_norm > 0.0f)
        clip = min(1.0f, max_norm / (sqrt(gnorm_sq[pc.off_gnorm]) + 1e-6f));
    OPS_FOR(i, pc.n) {
        float g = grad[pc.off_g + i] * clip;
        float m = b1 * m1[pc.off_m + i] + (1.0f - b1) * g;
        float v = b2 * m2[pc.off_v + i] + (1.0f - b2) * g * g;
        m1[pc.off_m + i] = m;
        m2[pc.off_v + i] = v;
        float p = param[pc.off_p + i];
        float mhat = m / bc1, vhat = v / bc2;
        param[pc.off_p + i] = p - lr * (mhat / (sqrt(vhat) + eps) + wd * p);
    }
}
