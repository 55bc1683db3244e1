//! Satellite lines in a catalog: how many of an exposure's other one-exposure detections lie on
//! one straight line through a detection.
//!
//! A faint satellite trail crosses the whole CCD in one exposure and `extract` cuts it into
//! tens to hundreds of S/N ~3 detections; each piece, seen in a 32 or 64 px stack, is the same
//! picture as a fast faint asteroid (a straight line through the cutout in one plane only). The
//! catalog tells them apart: the trail's other pieces lie on the same line, in the same
//! exposure, across the frame. A fast faint asteroid is cut into pieces too, but its trail in
//! one exposure is no longer than its rate times the exposure time (300 px at most in the
//! simulator's small preset), so what the veto reads is the number of pieces *and* the length
//! of their run along the line.
//!
//! Only *transients* are counted: detections with no detection at the same sky position (after
//! registration) in any of the other exposures, so that stars lying on a line by chance do not
//! make one. The count is a Hough transform done exactly per detection: every other transient
//! at distance r and direction t from the detection is within `half_width` px of the line
//! through the detection at angle a when |r sin(t - a)| <= half_width, an interval of angles;
//! a sweep over those intervals (angles modulo 180 degrees) finds the angle covered most often.
//!
//! The line may be any line through the detection, so a detection a few px beside a trail sees
//! part of it on a line crossing the trail at a small angle: with pieces every s px along a
//! trail of length L, up to about 2 L w / (d s) of them from a distance d (w the half width),
//! but far along the line, where it crosses the trail. Only the members in one unbroken run
//! with the detection (no gap wider than `max_gap`) are its line.

use std::f64::consts::PI;

use nearby_tasks::link::Grid;

/// A position in one exposure's pixels.
pub type Point = (f64, f64);

/// `true` for each of `points` with no point of any other exposure within `radius` px of the
/// same sky: `others` holds each other exposure's points and the offset (dx, dy) that takes a
/// position in this exposure to the same sky in that one (`night::register`).
pub fn transients(points: &[Point], others: &[(&[Point], (f64, f64))], radius: f64) -> Vec<bool> {
    let grids: Vec<(Grid, (f64, f64))> = others
        .iter()
        .map(|(pts, shift)| {
            let indexed: Vec<(f64, f64, u32)> = pts
                .iter()
                .enumerate()
                .map(|(i, &(x, y))| (x, y, i as u32))
                .collect();
            (Grid::new(&indexed, radius), *shift)
        })
        .collect();
    points
        .iter()
        .map(|&(x, y)| {
            !grids
                .iter()
                .any(|(g, (dx, dy))| g.any_within(x + dx, y + dy, radius))
        })
        .collect()
}

/// The line through one detection that holds most of the exposure's transients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    /// Transients on the line in one unbroken run with the detection (no gap along the line
    /// wider than the run's `max_gap`), the detection itself not counted.
    pub members: usize,
    /// Length of that run along the line, px, from its first to its last member (the
    /// detection included): a satellite trail runs across the frame, an asteroid's trail in
    /// one exposure is at most its rate times the exposure time.
    pub length_px: f64,
}

/// How transients are found on a line through a detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineSearch {
    /// Transients within this many px of the line (perpendicular) are on it.
    pub half_width: f64,
    /// A gap along the line wider than this ends the run of members through the detection.
    pub max_gap: f64,
}

/// For each of `points`, the straight line through it that holds most of the `candidates`
/// within `half_width` px (a candidate at the point's own position is the point itself and is
/// not counted), and the unbroken run of those members that holds the point.
pub fn lines(points: &[Point], candidates: &[Point], search: LineSearch) -> Vec<Line> {
    let LineSearch {
        half_width,
        max_gap,
    } = search;
    let mut events: Vec<(f64, i32)> = Vec::with_capacity(2 * candidates.len());
    let mut along: Vec<f64> = Vec::new();
    points
        .iter()
        .map(|&(x, y)| {
            events.clear();
            // Candidates that cover angle 0 (the interval wraps past 180 degrees) start the
            // sweep counted; those within `half_width` of the point are on every line.
            let mut at_zero = 0i32;
            for &(cx, cy) in candidates {
                let (dx, dy) = (cx - x, cy - y);
                let r = dx.hypot(dy);
                if r <= half_width {
                    continue;
                }
                let t = dy.atan2(dx).rem_euclid(PI);
                let w = (half_width / r).asin();
                let (start, end) = ((t - w).rem_euclid(PI), (t + w).rem_euclid(PI));
                if start > end {
                    at_zero += 1;
                }
                events.push((start, 1));
                events.push((end, -1));
            }
            // Openings before closings at one angle: the intervals are closed. The best angle
            // is the middle of the first stretch of angles covered most often.
            events.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
            let (mut now, mut best, mut angle) = (at_zero, at_zero, 0.0);
            for (k, &(t, step)) in events.iter().enumerate() {
                now += step;
                if now > best {
                    best = now;
                    let next = events.get(k + 1).map_or(PI, |e| e.0);
                    angle = 0.5 * (t + next);
                }
            }
            // The members at that angle, by their position along the line (0: the point).
            let (c, s) = (angle.cos(), angle.sin());
            along.clear();
            along.push(0.0);
            for &(cx, cy) in candidates {
                let (dx, dy) = (cx - x, cy - y);
                if dx == 0.0 && dy == 0.0 {
                    continue;
                }
                if (dy * c - dx * s).abs() <= half_width {
                    along.push(dx * c + dy * s);
                }
            }
            along.sort_by(f64::total_cmp);
            let at = along.iter().position(|u| *u == 0.0).unwrap_or(0);
            let mut first = at;
            while first > 0 && along[first] - along[first - 1] <= max_gap {
                first -= 1;
            }
            let mut last = at;
            while last + 1 < along.len() && along[last + 1] - along[last] <= max_gap {
                last += 1;
            }
            Line {
                members: last - first,
                length_px: along[last] - along[first],
            }
        })
        .collect()
}

/// For every detection of one exposure, its line among the exposure's transients (see
/// [`transients`]): what the satellite-line veto reads.
pub fn exposure_lines(
    points: &[Point],
    others: &[(&[Point], (f64, f64))],
    static_radius: f64,
    search: LineSearch,
) -> Vec<Line> {
    let transient = transients(points, others, static_radius);
    let candidates: Vec<Point> = points
        .iter()
        .zip(&transient)
        .filter(|(_, t)| **t)
        .map(|(p, _)| *p)
        .collect();
    lines(points, &candidates, search)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The trail's line: through (100, 500) at 0.37 rad.
    const TRAIL: (f64, f64, f64) = (100.0, 500.0, 0.37);

    /// Distance of a point from the trail's (infinite) line: a point on it is on the trail's
    /// line as much as the trail's pieces are, whatever it is.
    fn off_trail((x, y): Point) -> f64 {
        let (x0, y0, a) = TRAIL;
        ((x - x0) * a.sin() - (y - y0) * a.cos()).abs()
    }

    /// A 2048 x 4096 px CCD: 300 noise peaks at random, a satellite trail cut into 50 pieces
    /// (centroids scattered by up to 0.7 px across it), an asteroid's trail in 4 pieces.
    fn exposure(
        rng: &mut impl Rng,
    ) -> (Vec<Point>, std::ops::Range<usize>, std::ops::Range<usize>) {
        let mut pts = Vec::new();
        for _ in 0..300 {
            pts.push((rng.random_range(1.0..2048.0), rng.random_range(1.0..4096.0)));
        }
        let trail = pts.len()..pts.len() + 50;
        let (x0, y0, a) = TRAIL;
        for k in 0..50 {
            let s = 40.0 * k as f64 + rng.random_range(0.0..20.0);
            let off = rng.random_range(-0.7..0.7);
            pts.push((
                x0 + s * a.cos() - off * a.sin(),
                y0 + s * a.sin() + off * a.cos(),
            ));
        }
        let asteroid = pts.len()..pts.len() + 4;
        for k in 0..4 {
            pts.push((1500.0 + 9.0 * k as f64, 3000.0 - 5.0 * k as f64));
        }
        (pts, trail, asteroid)
    }

    const SEARCH: LineSearch = LineSearch {
        half_width: 2.0,
        max_gap: 100.0,
    };

    #[test]
    fn a_trail_of_50_stands_out_of_noise_and_an_asteroid() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (pts, trail, asteroid) = exposure(&mut rng);
        let n = lines(&pts, &pts, SEARCH);
        for i in trail.clone() {
            // The 49 other pieces (and perhaps a noise peak on the same line), over 2000 px.
            assert!(
                (49..=52).contains(&n[i].members),
                "trail piece {i}: {:?}",
                n[i]
            );
            assert!(n[i].length_px > 1900.0, "trail piece {i}: {:?}", n[i]);
        }
        for i in asteroid.clone() {
            // Its own 3 other pieces over 31 px, perhaps a noise peak by chance.
            assert!(
                (3..=4).contains(&n[i].members),
                "asteroid piece {i}: {:?}",
                n[i]
            );
            assert!(n[i].length_px < 150.0, "asteroid piece {i}: {:?}", n[i]);
        }
        for i in 0..300 {
            // A noise peak on the trail's line is on it (the count is about the line), and
            // one a few px beside it sees part of it on a line crossing it at a small angle,
            // but those are far along the line, not in a run with the peak; one 30 px away
            // holds no more than a random line's share.
            if off_trail(pts[i]) > 30.0 {
                assert!(n[i].members <= 2, "noise peak {i} {:?}: {:?}", pts[i], n[i]);
            }
        }
        // Narrower than the pieces' scatter, the line falls apart.
        let thin = lines(
            &pts,
            &pts,
            LineSearch {
                half_width: 0.05,
                ..SEARCH
            },
        );
        let thin_max = trail.map(|i| thin[i].members).max().unwrap_or(0);
        assert!(thin_max < 25, "a 0.1 px wide line still holds {thin_max}");
        // With gaps allowed only below the pieces' spacing, the run is the piece alone.
        let short = lines(
            &pts,
            &pts,
            LineSearch {
                max_gap: 10.0,
                ..SEARCH
            },
        );
        assert!(short[300].members <= 1, "{:?}", short[300]);
    }

    #[test]
    fn an_exact_line_and_the_wrap_at_180_degrees() {
        // Points on the x axis either side of the origin sit at angles 0 and 180 degrees: the
        // same line. Off-axis points at 1 px are within 2 px of it; at 5 px, 35 px out, no
        // line through the origin holds it and the ends at +-50 px together.
        let mut pts: Vec<Point> = (-5..=5).map(|k| (10.0 * k as f64, 0.0)).collect();
        pts.push((25.0, 1.0));
        pts.push((35.0, 5.0));
        let n = lines(&[(0.0, 0.0)], &pts, SEARCH);
        assert_eq!(n[0].members, 11, "{n:?}");
        assert!((n[0].length_px - 100.0).abs() < 1e-9, "{n:?}");
        // A vertical line: 8 points at 0.5 px from it, 7 px apart.
        let col: Vec<Point> = (1..=8).map(|k| (0.5, 7.0 * k as f64)).collect();
        let n = lines(&[(0.0, 0.0)], &col, SEARCH);
        assert_eq!(n[0].members, 8, "{n:?}");
        assert!((n[0].length_px - 56.0).abs() < 0.1, "{n:?}");
    }

    #[test]
    fn stars_on_a_line_are_not_transients() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (mut pts, trail, _) = exposure(&mut rng);
        // 40 stars on their own line, 54 px apart, seen in the next exposure shifted by
        // (3.2, -1.7) px.
        let stars = pts.len()..pts.len() + 40;
        for k in 0..40 {
            pts.push((1800.0 - 30.0 * k as f64, 200.0 + 45.0 * k as f64));
        }
        let next: Vec<Point> = pts[stars.clone()]
            .iter()
            .map(|(x, y)| (x + 3.2 + rng.random_range(-0.3..0.3), y - 1.7))
            .collect();
        let n = exposure_lines(&pts, &[(&next, (3.2, -1.7))], 2.0, SEARCH);
        for i in stars.filter(|&i| off_trail(pts[i]) > 30.0) {
            assert!(n[i].members <= 2, "star {i} on a line of {:?}", n[i]);
        }
        for i in trail {
            assert!(n[i].members >= 49, "trail piece {i}: {:?}", n[i]);
        }
        // Without registration the stars are transients and make their own line of 39.
        let unregistered = exposure_lines(&pts, &[(&next, (0.0, 0.0))], 2.0, SEARCH);
        assert!(unregistered[pts.len() - 1].members >= 39);
    }
}
