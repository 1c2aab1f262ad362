//! Binary logistic regression: scikit-learn's `LogisticRegression(C=c)` objective,
//! `0.5·‖w‖² + C·Σ log-loss` with the intercept not penalised, fitted on features standardised
//! with the training rows' mean and (population) standard deviation, as `StandardScaler` does.
//!
//! With a few dozen features the problem has a few dozen parameters, so it is solved exactly by
//! Newton's method: each step forms the (d+1)×(d+1) Hessian and solves it by Cholesky in f64.
//! A hand-written dense Cholesky of that size is a few lines, exact and deterministic, so no
//! linear-algebra crate enters the trusted base for it.

use crate::{sigmoid, Table, TrainError};
use serde::{Deserialize, Serialize};

/// Parameters of [`crate::Algorithm::LogisticRegression`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogisticParams {
    /// Inverse regularisation strength (scikit-learn's `C`).
    pub c: f64,
    /// Newton iterations at most.
    pub max_iter: u32,
    /// Stop when the Newton decrement (the objective decrease the next step predicts) is at
    /// most `tol × max(1, objective)`.
    pub tol: f64,
}

impl Default for LogisticParams {
    fn default() -> Self {
        LogisticParams {
            c: 1.0,
            max_iter: 100,
            tol: 1e-8,
        }
    }
}

/// A fitted logistic regression on raw features: `P(y=1|x) = σ(intercept + coefficients·x)`.
/// The standardisation is folded into the coefficients.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticModel {
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// Newton steps taken.
    pub iterations: u32,
}

impl LogisticModel {
    /// The linear score (log-odds of class 1) of one row.
    pub fn decision(&self, row: &[f32]) -> f64 {
        self.intercept
            + self
                .coefficients
                .iter()
                .zip(row)
                .map(|(w, &x)| w * f64::from(x))
                .sum::<f64>()
    }

    pub fn predict_proba(&self, table: &Table) -> Vec<f64> {
        assert_eq!(table.n_features(), self.coefficients.len(), "feature count");
        (0..table.n_rows())
            .map(|i| sigmoid(self.decision(table.row(i))))
            .collect()
    }
}

/// The standardised problem: θ = [b, w₁…w_d] over z = (x − mean) / scale.
struct Problem<'a> {
    table: &'a Table,
    mean: Vec<f64>,
    scale: Vec<f64>,
    c: f64,
}

/// Objective, gradient and (upper triangle of the) Hessian at θ.
struct Eval {
    objective: f64,
    grad: Vec<f64>,
    hessian: Vec<f64>,
}

impl Problem<'_> {
    fn dim(&self) -> usize {
        self.mean.len() + 1
    }

    /// Fills `z` with [1, standardised row i].
    fn z(&self, i: usize, z: &mut [f64]) {
        z[0] = 1.0;
        for (j, &x) in self.table.row(i).iter().enumerate() {
            z[j + 1] = (f64::from(x) - self.mean[j]) / self.scale[j];
        }
    }

    fn penalty(theta: &[f64]) -> f64 {
        0.5 * theta[1..].iter().map(|w| w * w).sum::<f64>()
    }

    fn objective(&self, theta: &[f64]) -> f64 {
        let mut z = vec![0.0; self.dim()];
        let mut loss = 0.0;
        for i in 0..self.table.n_rows() {
            self.z(i, &mut z);
            let eta: f64 = theta.iter().zip(&z).map(|(t, z)| t * z).sum();
            loss += log_loss(eta, f64::from(self.table.label(i)));
        }
        Self::penalty(theta) + self.c * loss
    }

    fn eval(&self, theta: &[f64]) -> Eval {
        let k = self.dim();
        let mut z = vec![0.0; k];
        let mut grad = vec![0.0; k];
        let mut hessian = vec![0.0; k * k];
        let mut loss = 0.0;
        for i in 0..self.table.n_rows() {
            self.z(i, &mut z);
            let eta: f64 = theta.iter().zip(&z).map(|(t, z)| t * z).sum();
            let y = f64::from(self.table.label(i));
            loss += log_loss(eta, y);
            let p = sigmoid(eta);
            let r = p - y;
            let h = p * (1.0 - p);
            for a in 0..k {
                grad[a] += r * z[a];
                let hz = h * z[a];
                let row = &mut hessian[a * k..(a + 1) * k];
                for b in a..k {
                    row[b] += hz * z[b];
                }
            }
        }
        for a in 0..k {
            grad[a] *= self.c;
            for b in a..k {
                hessian[a * k + b] *= self.c;
            }
        }
        // The penalty: identity on the weights, nothing on the intercept.
        for a in 1..k {
            grad[a] += theta[a];
            hessian[a * k + a] += 1.0;
        }
        Eval {
            objective: Self::penalty(theta) + self.c * loss,
            grad,
            hessian,
        }
    }
}

/// log(1 + e^η) − y·η without overflow.
fn log_loss(eta: f64, y: f64) -> f64 {
    let softplus = if eta > 0.0 {
        eta + (-eta).exp().ln_1p()
    } else {
        eta.exp().ln_1p()
    };
    softplus - y * eta
}

/// Solves `H x = rhs` for symmetric positive definite `H` (upper triangle given, k×k,
/// row-major) by Cholesky; `None` if `H` is not positive definite.
fn cholesky_solve(h: &[f64], rhs: &[f64]) -> Option<Vec<f64>> {
    let k = rhs.len();
    // L lower-triangular with L·Lᵀ = H.
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let mut s = h[j * k + i]; // H[i][j] = H[j][i], stored in the upper triangle
            for m in 0..j {
                s -= l[i * k + m] * l[j * k + m];
            }
            if i == j {
                // Not positive, or NaN: the matrix is not positive definite.
                if s.is_nan() || s <= 0.0 || s.is_infinite() {
                    return None;
                }
                l[i * k + i] = s.sqrt();
            } else {
                l[i * k + j] = s / l[j * k + j];
            }
        }
    }
    // Forward (L y = rhs), then backward (Lᵀ x = y).
    let mut y = vec![0.0; k];
    for i in 0..k {
        let mut s = rhs[i];
        for m in 0..i {
            s -= l[i * k + m] * y[m];
        }
        y[i] = s / l[i * k + i];
    }
    let mut x = vec![0.0; k];
    for i in (0..k).rev() {
        let mut s = y[i];
        for m in i + 1..k {
            s -= l[m * k + i] * x[m];
        }
        x[i] = s / l[i * k + i];
    }
    Some(x)
}

pub(crate) fn fit(params: &LogisticParams, table: &Table) -> Result<LogisticModel, TrainError> {
    check(params)?;
    let n = table.n_rows();
    let d = table.n_features();
    if n == 0 {
        return Err(TrainError::Empty);
    }
    let mut mean = vec![0.0; d];
    for i in 0..n {
        for (m, &x) in mean.iter_mut().zip(table.row(i)) {
            *m += f64::from(x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0; d];
    for i in 0..n {
        for ((v, &x), m) in var.iter_mut().zip(table.row(i)).zip(&mean) {
            let e = f64::from(x) - m;
            *v += e * e;
        }
    }
    // A constant column has no spread: scale 1 (as StandardScaler), its weight stays 0.
    let scale: Vec<f64> = var
        .iter()
        .map(|v| {
            let s = (v / n as f64).sqrt();
            if s > 0.0 && s.is_finite() {
                s
            } else {
                1.0
            }
        })
        .collect();
    let problem = Problem {
        table,
        mean,
        scale,
        c: params.c,
    };

    let mut theta = vec![0.0; d + 1];
    let mut iterations = 0;
    for _ in 0..params.max_iter {
        let e = problem.eval(&theta);
        let neg_grad: Vec<f64> = e.grad.iter().map(|g| -g).collect();
        let step = cholesky_solve(&e.hessian, &neg_grad)
            .ok_or(TrainError::Diverged("Hessian not positive definite"))?;
        // Newton decrement λ² = −g·Δ: twice the decrease a full step predicts.
        let decrement: f64 = neg_grad.iter().zip(&step).map(|(g, s)| g * s).sum();
        if !decrement.is_finite() || !e.objective.is_finite() {
            return Err(TrainError::Diverged("non-finite objective"));
        }
        if decrement / 2.0 <= params.tol * e.objective.max(1.0) {
            break;
        }
        // Backtracking (Armijo) keeps every step a descent, far from the optimum too.
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            let trial: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a + t * s).collect();
            if problem.objective(&trial) <= e.objective - 1e-4 * t * decrement {
                theta = trial;
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        iterations += 1;
        if !accepted {
            // No decrease possible at f64 precision: θ is as good as it gets.
            break;
        }
    }
    if theta.iter().any(|t| !t.is_finite()) {
        return Err(TrainError::Diverged("non-finite coefficients"));
    }
    // Fold the standardisation in: w·(x − m)/s + b = (w/s)·x + (b − Σ w·m/s).
    let coefficients: Vec<f64> = theta[1..]
        .iter()
        .zip(&problem.scale)
        .map(|(w, s)| w / s)
        .collect();
    let intercept = theta[0]
        - coefficients
            .iter()
            .zip(&problem.mean)
            .map(|(w, m)| w * m)
            .sum::<f64>();
    Ok(LogisticModel {
        coefficients,
        intercept,
        iterations,
    })
}

/// Most Newton iterations a job may ask for: each is a pass over every row and a solve, and the
/// runtime is shared by every party.
pub const MAX_ITER: u32 = 10_000;

/// The parameter checks, before any data is touched.
pub(crate) fn check(params: &LogisticParams) -> Result<(), TrainError> {
    if !(params.c > 0.0 && params.c.is_finite()) {
        return Err(TrainError::InvalidParam {
            param: "c",
            reason: "must be a positive number",
        });
    }
    if !(params.tol >= 0.0 && params.tol.is_finite()) {
        return Err(TrainError::InvalidParam {
            param: "tol",
            reason: "must be a non-negative number",
        });
    }
    if params.max_iter == 0 || params.max_iter > MAX_ITER {
        return Err(TrainError::InvalidParam {
            param: "max_iter",
            reason: "must be 1 to 10000",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        // H = [[4, 2], [2, 3]] (upper triangle given), x = [1, -1] → rhs = [2, -1].
        let h = [4.0, 2.0, 0.0, 3.0];
        let x = cholesky_solve(&h, &[2.0, -1.0]).unwrap();
        assert!(
            (x[0] - 1.0).abs() < 1e-12 && (x[1] + 1.0).abs() < 1e-12,
            "{x:?}"
        );
        assert!(cholesky_solve(&[1.0, 2.0, 0.0, 1.0], &[1.0, 1.0]).is_none());
    }

    #[test]
    fn gradient_vanishes_at_the_solution() {
        // Overlapping classes on two features, one of them constant.
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for i in 0..200 {
            let x = (i as f32 * 0.37).sin() * 3.0 + (i % 7) as f32 * 0.1;
            features.extend_from_slice(&[x, 5.0]);
            labels.push(if (x + (i as f32 * 1.3).cos()) > 0.2 {
                1.0
            } else {
                0.0
            });
        }
        let table = Table::new(features, labels, 2).unwrap();
        let model = fit(&LogisticParams::default(), &table).unwrap();
        assert_eq!(
            model.coefficients[1], 0.0,
            "a constant column gets no weight"
        );
        // ∂/∂b of C·Σ log-loss is C·Σ(p − y): zero at the optimum.
        let p = model.predict_proba(&table);
        let residual: f64 = p
            .iter()
            .zip(table.labels())
            .map(|(p, &y)| p - f64::from(y))
            .sum();
        assert!(residual.abs() < 1e-6, "{residual}");
        assert!(model.iterations < 20);
    }
}
