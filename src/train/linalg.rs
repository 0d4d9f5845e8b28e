//! A small linear-algebra kit for dense symmetric matrices stored row-major in `Vec<f64>`:
//! products, symmetric eigendecomposition (Jacobi) and the square root of a positive
//! semi-definite matrix (what the Fréchet distance needs), no dependency for it.

/// The symmetric positive semi-definite square root of `m` (`n x n`, row-major).
pub fn sqrt_psd(m: &[f64], n: usize) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(m, n);
    let mut out = vec![0.0; n * n];
    for (k, &value) in values.iter().enumerate() {
        let s = value.max(0.0).sqrt();
        if s == 0.0 {
            continue;
        }
        for i in 0..n {
            let vik = vectors[i * n + k] * s;
            if vik == 0.0 {
                continue;
            }
            for j in 0..n {
                out[i * n + j] += vik * vectors[j * n + k];
            }
        }
    }
    out
}

pub fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            if aik == 0.0 {
                continue;
            }
            let (row, brow) = (&mut out[i * n..(i + 1) * n], &b[k * n..(k + 1) * n]);
            for (o, &bkj) in row.iter_mut().zip(brow) {
                *o += aik * bkj;
            }
        }
    }
    out
}

pub fn symmetrised(m: &[f64], n: usize) -> Vec<f64> {
    let mut out = m.to_vec();
    for i in 0..n {
        for j in i + 1..n {
            let v = 0.5 * (m[i * n + j] + m[j * n + i]);
            out[i * n + j] = v;
            out[j * n + i] = v;
        }
    }
    out
}

/// Eigenvalues and eigenvectors of a symmetric `n x n` matrix (row-major) by cyclic Jacobi
/// rotations. Returns `(values, vectors)` with eigenvector `k` in column `k` of `vectors`
/// (row-major), so `m = V diag(values) V^T`.
pub fn symmetric_eigen(m: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(m.len(), n * n, "symmetric_eigen: not an n x n matrix");
    let mut a = m.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[p * n + q] * a[p * n + q];
            }
        }
        if off <= total * 1e-30 || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let app = a[p * n + p];
                let aqq = a[q * n + q];
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                    sign / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- J^T A J, V <- V J, with J the rotation in the (p, q) plane.
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = 0.0;
                a[q * n + p] = 0.0;
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let values = (0..n).map(|i| a[i * n + i]).collect();
    (values, v)
}
