//! The repair types: the friendly names users write (`sr`, `repair`, `colour`/`color`, `bg`)
//! and the wire values the vendor expects. This is the one place that maps between them, so
//! it can change if the vendor turns out to expect a different spelling.

use std::fmt;
use std::str::FromStr;

/// What the service should do to a photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Repair {
    /// Super-resolution.
    Sr,
    /// Super-resolution plus old-photo repair.
    Repair,
    /// Super-resolution, repair and colourisation.
    Colour,
    /// ID-photo background colour change (needs an [`Rgb`]).
    Bg,
}

impl Repair {
    pub const ALL: [Repair; 4] = [Repair::Sr, Repair::Repair, Repair::Colour, Repair::Bg];

    /// The value sent as the `repair_type` form field.
    pub fn wire(self) -> &'static str {
        match self {
            Repair::Sr => "sr",
            Repair::Repair => "sr,repair",
            Repair::Colour => "sr,repair,colour",
            Repair::Bg => "bg",
        }
    }

    /// The friendly name used in config, the CLI and output file names.
    pub fn name(self) -> &'static str {
        match self {
            Repair::Sr => "sr",
            Repair::Repair => "repair",
            Repair::Colour => "colour",
            Repair::Bg => "bg",
        }
    }

    /// Parses a wire value (`sr,repair`…), as stored in the database and read by the simulator.
    pub fn from_wire(s: &str) -> Option<Repair> {
        Repair::ALL.into_iter().find(|r| r.wire() == s)
    }

    /// What the service does, in words, e.g. `super-resolution and repair` or `ID-photo
    /// background changed to 255,255,255`.
    pub fn in_words(self, rgb: Option<Rgb>) -> String {
        match self {
            Repair::Sr => "super-resolution".to_string(),
            Repair::Repair => "super-resolution and repair".to_string(),
            Repair::Colour => "super-resolution, repair and colourisation".to_string(),
            Repair::Bg => match rgb {
                Some(rgb) => format!("ID-photo background changed to {rgb}"),
                None => "ID-photo background change".to_string(),
            },
        }
    }

    pub fn needs_rgb(self) -> bool {
        self == Repair::Bg
    }

    /// How many times larger per side the result is than the photo: every type but `bg`
    /// includes super-resolution, which doubles each side.
    pub fn result_scale(self) -> u64 {
        match self {
            Repair::Bg => 1,
            Repair::Sr | Repair::Repair | Repair::Colour => 2,
        }
    }
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown repair type {0:?}: use one of sr, repair, colour (or color), bg")]
pub struct UnknownRepair(pub String);

impl FromStr for Repair {
    type Err = UnknownRepair;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sr" => Ok(Repair::Sr),
            "repair" => Ok(Repair::Repair),
            "colour" | "color" => Ok(Repair::Colour),
            "bg" => Ok(Repair::Bg),
            _ => Err(UnknownRepair(s.to_string())),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Repair {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A background colour for `bg`, written `R,G,B` with each part 0–255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.0, self.1, self.2)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid colour {0:?}: write it as R,G,B with each part 0-255, e.g. 255,255,255")]
pub struct InvalidRgb(pub String);

impl FromStr for Rgb {
    type Err = InvalidRgb;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [r, g, b] = parts.as_slice() else {
            return Err(InvalidRgb(s.to_string()));
        };
        let p = |x: &str| x.parse::<u8>().map_err(|_| InvalidRgb(s.to_string()));
        Ok(Rgb(p(r)?, p(g)?, p(b)?))
    }
}

impl<'de> serde::Deserialize<'de> for Rgb {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friendly_names_map_to_wire_values() {
        assert_eq!("sr".parse::<Repair>().unwrap().wire(), "sr");
        assert_eq!("repair".parse::<Repair>().unwrap().wire(), "sr,repair");
        assert_eq!(
            "colour".parse::<Repair>().unwrap().wire(),
            "sr,repair,colour"
        );
        assert_eq!("color".parse::<Repair>().unwrap(), Repair::Colour);
        assert_eq!("bg".parse::<Repair>().unwrap().wire(), "bg");
        assert!("sharpen".parse::<Repair>().is_err());
        for r in Repair::ALL {
            assert_eq!(Repair::from_wire(r.wire()), Some(r));
        }
    }

    #[test]
    fn rgb_parses_and_prints() {
        assert_eq!("255, 255,0".parse::<Rgb>().unwrap(), Rgb(255, 255, 0));
        assert_eq!(Rgb(1, 2, 3).to_string(), "1,2,3");
        for bad in ["", "1,2", "1,2,3,4", "256,0,0", "a,b,c"] {
            assert!(bad.parse::<Rgb>().is_err(), "{bad}");
        }
    }
}
