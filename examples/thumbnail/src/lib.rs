//! The pure part of the thumbnail function: image processing and the small
//! string helpers it needs (object keys, URL paths). Nothing here does I/O,
//! so it builds and is tested on the host (`cargo test -p thumbnail`); the
//! HTTP side is in `main.rs`.

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use std::fmt;
use std::io::Cursor;

/// A PNG thumbnail and its size in pixels.
#[derive(Debug)]
pub struct Thumbnail {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Why [`make_thumbnail`] failed.
#[derive(Debug)]
pub enum ThumbnailError {
    /// The input is not a PNG or JPEG image we can decode: the caller's
    /// fault, never worth retrying as is.
    NotAnImage(String),
    /// Encoding the PNG failed (should not happen for decoded input).
    Encode(String),
}

impl fmt::Display for ThumbnailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThumbnailError::NotAnImage(m) => write!(f, "not a PNG or JPEG image: {m}"),
            ThumbnailError::Encode(m) => write!(f, "could not encode the thumbnail as PNG: {m}"),
        }
    }
}

impl std::error::Error for ThumbnailError {}

/// Decodes a PNG or JPEG (recognised by its content, not its name), scales
/// it to fit in `max`×`max` keeping its aspect ratio, and encodes the result
/// as PNG. Images that already fit are not enlarged. A JPEG's EXIF
/// orientation is applied first, so phone photos come out upright.
///
/// Decoding runs under `image`'s default limits (at most 512 MiB allocated),
/// so a small file that claims an enormous size is refused, not decoded.
pub fn make_thumbnail(bytes: &[u8], max: u32) -> Result<Thumbnail, ThumbnailError> {
    let max = max.max(1);
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ThumbnailError::NotAnImage(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(other) => {
            return Err(ThumbnailError::NotAnImage(format!(
                "the content looks like {other:?}, only PNG and JPEG are supported"
            )));
        }
        None => {
            return Err(ThumbnailError::NotAnImage(
                "the content is not in any image format this function knows".into(),
            ));
        }
    }
    let not_an_image = |e: image::ImageError| ThumbnailError::NotAnImage(e.to_string());
    let mut decoder = reader.into_decoder().map_err(not_an_image)?;
    let orientation = decoder.orientation().map_err(not_an_image)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(not_an_image)?;
    img.apply_orientation(orientation);

    let thumb = if img.width() <= max && img.height() <= max {
        img
    } else {
        // A box filter where each source pixel lands in one target pixel:
        // fast, and good enough for downscaling by large factors.
        img.thumbnail(max, max)
    };
    let mut png = Vec::new();
    thumb
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
    Ok(Thumbnail {
        png,
        width: thumb.width(),
        height: thumb.height(),
    })
}

/// The key of the thumbnail of `source_key`: `{target_prefix}{file stem}.png`,
/// e.g. `in/2024/cat.jpg` → `out/cat.png`. Only the last path segment is
/// kept, so every thumbnail is a single name under the target prefix (which
/// is what `GET /thumbs/{name}` serves). `None` for a key that has no file
/// name (a "directory" key such as `in/`).
pub fn thumbnail_key(source_key: &str, target_prefix: &str) -> Option<String> {
    let file = source_key.rsplit('/').next().unwrap_or(source_key);
    // `.hidden` keeps its name; `cat.tar.jpg` becomes `cat.tar`.
    let stem = match file.rfind('.') {
        Some(i) if i > 0 => &file[..i],
        _ => file,
    };
    if stem.is_empty() {
        return None;
    }
    Some(format!("{target_prefix}{stem}.png"))
}

/// Percent-encodes an object key for an S3 path-style URL: every byte but
/// the unreserved ones (`A-Z a-z 0-9 - . _ ~`) is `%XX`, per segment, and the
/// `/` between segments is kept.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes in a URL path segment. `None` when the result is
/// not UTF-8 or an escape is malformed.
pub fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `{name}` of a request path that ends in `/thumbs/{name}` (the
/// gateway may pass the path with a prefix in front), decoded; `None` when
/// the path does not have that shape or the name is not a plain file name.
pub fn thumbs_name(path: &str) -> Option<String> {
    let i = path.rfind("/thumbs/")?;
    let name = decode_segment(&path[i + "/thumbs/".len()..])?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn png_of(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut buf = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut buf), ImageFormat::Png)
            .unwrap();
        buf
    }

    fn dimensions_of(png: &[u8]) -> (u32, u32) {
        assert_eq!(image::guess_format(png).unwrap(), ImageFormat::Png);
        let img = image::load_from_memory(png).unwrap();
        (img.width(), img.height())
    }

    #[test]
    fn landscape_png_fits_the_box_keeping_its_aspect_ratio() {
        let t = make_thumbnail(&png_of(400, 200), 128).unwrap();
        assert_eq!((t.width, t.height), (128, 64));
        assert_eq!(dimensions_of(&t.png), (128, 64));
    }

    #[test]
    fn portrait_png_fits_the_box_keeping_its_aspect_ratio() {
        let t = make_thumbnail(&png_of(90, 300), 30).unwrap();
        assert_eq!((t.width, t.height), (9, 30));
        assert_eq!(dimensions_of(&t.png), (9, 30));
    }

    #[test]
    fn jpeg_is_decoded_too() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(256, 256, Rgb([200, 10, 10])));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let t = make_thumbnail(&jpeg, 128).unwrap();
        assert_eq!((t.width, t.height), (128, 128));
        assert_eq!(dimensions_of(&t.png), (128, 128));
    }

    #[test]
    fn small_images_are_not_enlarged() {
        let t = make_thumbnail(&png_of(40, 20), 128).unwrap();
        assert_eq!((t.width, t.height), (40, 20));
    }

    #[test]
    fn non_images_are_refused() {
        let e = make_thumbnail(b"hello, this is text", 128).unwrap_err();
        assert!(matches!(e, ThumbnailError::NotAnImage(_)), "{e}");
        // A GIF header: recognised, but not a format this function decodes.
        let e = make_thumbnail(b"GIF89a\x01\x00\x01\x00", 128).unwrap_err();
        assert!(e.to_string().contains("Gif"), "{e}");
        // A truncated PNG.
        let png = png_of(10, 10);
        let e = make_thumbnail(&png[..30], 128).unwrap_err();
        assert!(matches!(e, ThumbnailError::NotAnImage(_)), "{e}");
    }

    #[test]
    fn thumbnail_keys() {
        assert_eq!(thumbnail_key("in/cat.jpg", "out/").unwrap(), "out/cat.png");
        assert_eq!(
            thumbnail_key("in/2024/my cat.JPEG", "out/").unwrap(),
            "out/my cat.png"
        );
        assert_eq!(thumbnail_key("in/noext", "out/").unwrap(), "out/noext.png");
        assert_eq!(thumbnail_key("in/.hidden", "t/").unwrap(), "t/.hidden.png");
        assert_eq!(thumbnail_key("in/", "out/"), None);
    }

    #[test]
    fn keys_are_encoded_per_segment() {
        assert_eq!(encode_key("in/cat.jpg"), "in/cat.jpg");
        assert_eq!(encode_key("in/my cat+1.jpg"), "in/my%20cat%2B1.jpg");
        assert_eq!(encode_key("in/ü?#.png"), "in/%C3%BC%3F%23.png");
    }

    #[test]
    fn thumbs_paths() {
        assert_eq!(thumbs_name("/thumbs/cat.png").unwrap(), "cat.png");
        assert_eq!(thumbs_name("/fn/thumbs/thumbs/cat.png").unwrap(), "cat.png");
        assert_eq!(thumbs_name("/thumbs/my%20cat.png").unwrap(), "my cat.png");
        assert_eq!(thumbs_name("/thumbs/"), None);
        assert_eq!(thumbs_name("/thumbs/a/b.png"), None);
        assert_eq!(thumbs_name("/thumbs/a%2Fb.png"), None);
        assert_eq!(thumbs_name("/thumbs/.."), None);
        assert_eq!(thumbs_name("/thumbs/%zz"), None);
        assert_eq!(thumbs_name("/other/cat.png"), None);
    }
}
