//! Berth image service: references, registry client, content store and layer unpacking.
