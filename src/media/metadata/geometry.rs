//! How the result's pixels relate to the source's: the scale per axis, whether the service
//! turned the picture upright (decided from the dimensions alone), and the print density
//! that keeps the print size the same.

/// The source's and the result's stored pixel dimensions and the source's EXIF orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub source: (u32, u32),
    pub result: (u32, u32),
    /// EXIF `Orientation` of the source (1 when absent).
    pub orientation: u16,
}

impl Geometry {
    /// The result's aspect ratio matches the source's turned a quarter, better than it matches
    /// the source's as stored: the service rotated the pixels. A square source never counts
    /// as turned (its dimensions cannot tell).
    pub fn swapped(&self) -> bool {
        let (sw, sh) = (self.source.0 as u64, self.source.1 as u64);
        let (rw, rh) = (self.result.0 as u64, self.result.1 as u64);
        if sw == sh {
            return false;
        }
        // Cross-multiplied aspect ratios: rw/rh against sw/sh (kept) and sh/sw (turned).
        let kept = (rw * sh).abs_diff(rh * sw);
        let turned = (rw * sw).abs_diff(rh * sh);
        turned < kept
    }

    /// Whether the result's pixels are already upright, so its `Orientation` must be 1: the
    /// source needed a quarter turn (orientations 5 to 8) and the result's dimensions are the
    /// source's turned. Mirrors and half turns (2 to 4) cannot be seen in the dimensions; the
    /// result keeps those orientations, as it keeps the source's pixel layout.
    pub fn upright(&self) -> bool {
        (5..=8).contains(&self.orientation) && self.swapped()
    }

    /// The scale of each result axis against the source axis it came from, as fractions
    /// `(result pixels, source pixels)`: `((2, 1), (2, 1))` for a 2× upscale, written with
    /// the dimensions themselves.
    pub fn scale(&self) -> ((u32, u32), (u32, u32)) {
        let (sw, sh) = if self.swapped() {
            (self.source.1, self.source.0)
        } else {
            self.source
        };
        ((self.result.0, sw.max(1)), (self.result.1, sh.max(1)))
    }

    /// Scales a resolution given per source axis (`x`, `y`) to the result's axes.
    pub fn scale_pair(&self, x: f64, y: f64) -> (f64, f64) {
        let (x, y) = if self.swapped() { (y, x) } else { (x, y) };
        let ((nx, dx), (ny, dy)) = self.scale();
        (x * nx as f64 / dx as f64, y * ny as f64 / dy as f64)
    }

    /// A rational resolution scaled by the upscale of the result's x axis (else its y axis).
    pub fn scale_rational(&self, (num, den): (u32, u32), result_x_axis: bool) -> (u32, u32) {
        let ((nx, dx), (ny, dy)) = self.scale();
        let (n, d) = if result_x_axis { (nx, dx) } else { (ny, dy) };
        reduce(num as u64 * n as u64, den.max(1) as u64 * d as u64)
    }
}

/// `n/d` in lowest terms, approximated (halving both) until each fits in 32 bits.
fn reduce(mut n: u64, mut d: u64) -> (u32, u32) {
    let g = gcd(n, d).max(1);
    (n, d) = (n / g, d / g);
    while n > u32::MAX as u64 || d > u32::MAX as u64 {
        (n, d) = (n.div_ceil(2), d.div_ceil(2));
    }
    (n as u32, d.max(1) as u32)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The unit of a print density.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DensityUnit {
    Inch,
    Cm,
}

/// Pixels per unit along each stored axis: what JFIF density, PNG `pHYs` and EXIF
/// X/YResolution each say in their own encoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Density {
    pub unit: DensityUnit,
    pub x: f64,
    pub y: f64,
}

impl Density {
    /// From a JFIF APP0 header's units (1 dpi, 2 dpcm; 0 is an aspect ratio only) and values.
    pub fn from_jfif(units: u8, x: u16, y: u16) -> Option<Density> {
        let unit = match units {
            1 => DensityUnit::Inch,
            2 => DensityUnit::Cm,
            _ => return None,
        };
        (x > 0 && y > 0).then_some(Density {
            unit,
            x: x as f64,
            y: y as f64,
        })
    }

    /// From a PNG `pHYs` chunk (unit 1 is the metre; 0 is an aspect ratio only).
    pub fn from_phys(x: u32, y: u32, unit: u8) -> Option<Density> {
        (unit == 1 && x > 0 && y > 0).then_some(Density {
            unit: DensityUnit::Cm,
            x: x as f64 / 100.0,
            y: y as f64 / 100.0,
        })
    }

    /// From EXIF X/YResolution and ResolutionUnit (2 inch, the default; 3 cm).
    pub fn from_exif(x: (u32, u32), y: (u32, u32), unit: Option<u32>) -> Option<Density> {
        let unit = match unit.unwrap_or(2) {
            2 => DensityUnit::Inch,
            3 => DensityUnit::Cm,
            _ => return None,
        };
        let v = |(n, d): (u32, u32)| (d > 0 && n > 0).then(|| n as f64 / d as f64);
        Some(Density {
            unit,
            x: v(x)?,
            y: v(y)?,
        })
    }

    /// The same print size for the result's pixels.
    pub fn scaled(&self, g: &Geometry) -> Density {
        let (x, y) = g.scale_pair(self.x, self.y);
        Density { x, y, ..*self }
    }

    /// JFIF units and values; `None` when a value does not fit in 16 bits.
    pub fn to_jfif(&self) -> Option<(u8, u16, u16)> {
        let units = match self.unit {
            DensityUnit::Inch => 1,
            DensityUnit::Cm => 2,
        };
        let fit = |v: f64| {
            let r = v.round();
            (r >= 1.0 && r <= u16::MAX as f64).then_some(r as u16)
        };
        Some((units, fit(self.x)?, fit(self.y)?))
    }

    /// Dots per inch along each axis.
    pub fn dpi(&self) -> (f64, f64) {
        match self.unit {
            DensityUnit::Inch => (self.x, self.y),
            DensityUnit::Cm => (self.x * 2.54, self.y * 2.54),
        }
    }

    /// PNG `pHYs` pixels per metre.
    pub fn to_phys(&self) -> (u32, u32) {
        let per_m = |v: f64| match self.unit {
            DensityUnit::Inch => v / 0.0254,
            DensityUnit::Cm => v * 100.0,
        };
        let fit = |v: f64| v.round().clamp(1.0, u32::MAX as f64) as u32;
        (fit(per_m(self.x)), fit(per_m(self.y)))
    }
}
