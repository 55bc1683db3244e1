#!/usr/bin/python3
"""Checks a solved TAN-SIP WCS file (nearby astrometry's wcs.fits) against nearby's own numbers.

    astropy_sip_check.py WCS_FITS POINTS_TXT

POINTS_TXT has one line per point: HDU x y ra dec (nearby's pix_to_sky). astropy must read the
keywords without a warning, its all_pix2world must agree to 1e-9 deg and its iterative
all_world2pix (which starts from AP/BP) to 1e-6 px.
"""
import sys
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

warnings.simplefilter("error")  # any FITSFixedWarning about our keywords fails the check
# ... except that a header-only HDU (NAXIS = 0) has fewer axes than its WCS: expected here.
warnings.filterwarnings("ignore", message="The WCS transformation has more axes")
hdul = fits.open(sys.argv[1])
pts = np.loadtxt(sys.argv[2], ndmin=2)
for hdu in sorted(set(pts[:, 0].astype(int))):
    p = pts[pts[:, 0] == hdu]
    w = WCS(hdul[hdu].header)
    assert w.sip is not None, f"HDU {hdu}: astropy found no SIP"
    assert w.wcs.ctype[0] == "RA---TAN-SIP", w.wcs.ctype[0]
    sky = w.all_pix2world(p[:, 1:3], 1)
    dra = (sky[:, 0] - p[:, 3] + 180) % 360 - 180
    d_sky = np.max(np.hypot(dra * np.cos(np.radians(p[:, 4])), sky[:, 1] - p[:, 4]))
    assert d_sky < 1e-9, f"HDU {hdu}: all_pix2world differs by {d_sky * 3.6e6:.3g} mas"
    pix = w.all_world2pix(p[:, 3:5], 1, tolerance=1e-10, maxiter=50)
    d_it = np.max(np.hypot(*(pix - p[:, 1:3]).T))
    assert d_it < 1e-6, f"HDU {hdu}: all_world2pix differs by {d_it:.3g} px"
    print(f"HDU {hdu}: {len(p)} points, all_pix2world within {d_sky * 3.6e6:.2g} mas, "
          f"all_world2pix within {d_it:.2g} px")
print("astropy SIP check OK")
